"""The configuration files of the node's own processes: containerd (and the registries it may not
reach), the CNI network, the kubelet and kube-proxy; and the names and addresses they share."""

from __future__ import annotations

import json
from pathlib import Path

from aikeys_dev.devstack.node.slots import Slot

NODE_NAME = "aikeys-node"
POD_CIDR = "10.244.0.0/24"
CLUSTER_DNS = "10.96.0.10"
KUBERNETES_SERVICE_IP = "10.96.0.1"
# The node's state directory as its processes see it (bind-mounted in its mount namespace): unix
# socket paths must stay short, and a pytest tmp_path is not.
INNER = Path("/run/aikeys")
CLOSED_PORT = 9  # nothing listens on the node's loopback port 9: where registries are sent
PAUSE_IMAGE = "aikeys.local/pause:{version}"


def containerd_config(state: Path, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{state}/containerd/root"
state = "{state}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{state}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/containerd/opt"

[{cri}]
  sandbox_image = "{pause_image}"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under = "{state}/netns"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{state}/cni"

[{cri}.registry]
  config_path = "{state}/registries"
"""


REGISTRIES = ("_default", "docker.io", "registry.k8s.io", "ghcr.io", "quay.io", "gcr.io", "aikeys.local")


def write_registry_hosts(directory: Path) -> None:
    """Every registry, by name, is a closed port on the node's loopback: no pull leaves."""
    for name in REGISTRIES:
        (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / name / "hosts.toml").write_text(
            f'server = "https://127.0.0.1:{CLOSED_PORT}"\n\n'
            f'[host."https://127.0.0.1:{CLOSED_PORT}"]\n  capabilities = ["pull", "resolve"]\n'
        )


def cni_config(state: Path) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "aikeys",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(state / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(state: Path, slot: Slot, ca: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # containerd 1.6 ties this machine to cgroup v1, which 1.34 still allows when asked
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": slot.cgroup_root,
        "failSwapOn": False,
        "resolvConf": "",
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": "cluster.local",
        "containerRuntimeEndpoint": f"unix://{state}/containerd.sock",
        "address": slot.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "volumePluginDir": str(state / "kubelet" / "volume-plugins"),
        "podLogsDir": "/var/log/pods",  # the node's own /var/log (see the mount namespace)
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        # a small shared disk: no image garbage collection, evict only when truly full
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # leave the machine-wide conntrack table alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }

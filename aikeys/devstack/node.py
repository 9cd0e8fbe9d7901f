"""A real one-node Kubernetes cluster in a network namespace of its own.

    with start_node(tmp_path, images=[...]) as node:
        node.kubectl("get", "nodes")

Beside the process-only control plane of `controlplane`, this runs what a cluster's node runs:
kube-scheduler, kubelet and kube-proxy (built from the same Kubernetes module, `tools/k8s/build.sh
--node`), containerd, runc and the CNI plugins (Debian packages), and as pods CoreDNS and Traefik
(the Ingress controller) from images built locally (`aikeys.devstack.images`).

How it keeps to the network rule (traffic only to loopback and to namespaces we made):

- every process runs in the network namespace `aikeys-n<i>`, reachable from the host over a veth
  pair (10.200.<i>.1 on the host, 10.200.<i>.2 the node); inside, the default route leads to a
  bridge without ports, so nothing leaves; pods may not reach the host side of the veth either
  (a DROP rule in the namespace's own FORWARD chain). The root namespace's iptables and
  ip_forward are never touched.
- containerd sends every registry to a closed port on its loopback (hosts files and
  HTTP(S)_PROXY), so an image that was not imported fails at once and no pull leaves the machine.
- CoreDNS has no `forward` plugin: names outside the cluster are NXDOMAIN.

How it leaves the machine as it found it: the node's processes also share a private mount
namespace (held by one `sleep`), so every mount they make (overlay snapshots, secret volumes,
pod network namespaces) disappears with them, and /run, /var/log and /var/lib/cni are the
node's own there. The kubelet changes machine-wide sysctls (`KUBELET_SYSCTLS`): their values
are saved in /run/aikeys-node before the first node starts and restored when the last one
stops. `stop()` kills every process in the node's namespace and cgroups, removes the cgroups
and the namespace, and restores the sysctls; a node whose launcher was SIGKILLed is cleaned up
the same way by the next `launch_node()` or by `reap_stale()` (`make cluster-down`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import yaml

from aikeys.devstack.binaries import BUILD_SCRIPT, Binaries, cache_dir, ensure_built, read_versions
from aikeys.devstack.controlplane import ControlPlane, launch
from aikeys.devstack.pki import make_ca, sign, write_pair
from aikeys.devstack.processes import Child, StartupError, pid_alive

NODE_NAME = "aikeys-node"
POD_CIDR = "10.244.0.0/24"
CLUSTER_DNS = "10.96.0.10"
KUBERNETES_SERVICE_IP = "10.96.0.1"
MAX_NODES = 16  # 10.200.0.0/30 ... 10.200.15.0/30
STATE_ROOT = Path(os.environ.get("AIKEYS_NODE_STATE", "/run/aikeys-node"))  # machine-wide, gone on reboot
# Every sysctl the kubelet sets at start (pkg/kubelet/cm: setupKernelTunables); machine-wide,
# not per network namespace, so they are saved before and restored after.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
# The node's state directory as its processes see it (bind-mounted in its mount namespace): unix
# socket paths must stay short, and a pytest tmp_path is not.
INNER = Path("/run/aikeys")
CLOSED_PORT = 9  # nothing listens on the node's loopback port 9: where registries are sent
PAUSE_IMAGE = "aikeys.local/pause:{version}"
COREDNS_IMAGE = "aikeys.local/coredns:{version}"
TRAEFIK_IMAGE = "aikeys.local/traefik:{version}"
INGRESS_CLASS = "traefik"


# --- binaries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeBinaries:
    """The control plane's binaries plus what the node runs (tools/k8s/build.sh --node)."""

    control_plane: Binaries
    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    coredns: Path
    traefik: Path
    pause: Path
    versions: dict[str, str]

    def missing(self) -> list[Path]:
        own = [self.kubelet, self.kube_scheduler, self.kube_proxy, self.coredns, self.traefik, self.pause]
        return self.control_plane.missing() + [p for p in own if not os.access(p, os.X_OK)]


def locate_node_binaries(control_plane: Binaries) -> NodeBinaries:
    v = read_versions()
    bin_dir = cache_dir() / "bin"
    k8s = control_plane.kubectl.parent
    return NodeBinaries(
        control_plane=control_plane,
        kubelet=k8s / "kubelet",
        kube_scheduler=k8s / "kube-scheduler",
        kube_proxy=k8s / "kube-proxy",
        coredns=bin_dir / f"coredns-{v['COREDNS_VERSION']}" / "coredns",
        traefik=bin_dir / f"traefik-{v['TRAEFIK_VERSION']}" / "traefik",
        pause=bin_dir / f"pause-{v['PAUSE_VERSION']}" / "pause",
        versions=v,
    )


def ensure_node_built() -> NodeBinaries:
    """The node's binaries, running `tools/k8s/build.sh --node` first when any is missing."""
    found = locate_node_binaries(ensure_built())
    if found.missing():
        print(
            f"aikeys: building the node's binaries into {cache_dir()} (first run only) ...", file=sys.stderr
        )
        subprocess.run(["bash", str(BUILD_SCRIPT), "--node"], check=True, stdout=sys.stderr)
        found = locate_node_binaries(ensure_built())
        if found.missing():
            raise RuntimeError(f"build finished but binaries are missing: {found.missing()}")
    return found


def system_missing() -> list[str]:
    """Debian commands the node needs that are not installed (tools/setup-system.sh installs them)."""
    commands = ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "conntrack", "nsenter"]
    missing = [c for c in commands if not _which(c)]
    missing += [f"/usr/lib/cni/{p}" for p in ("bridge", "host-local", "loopback") if not _cni(p).exists()]
    return missing


def _which(cmd: str) -> bool:
    dirs = [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]
    return any(os.access(Path(d) / cmd, os.X_OK) for d in dirs)


def _cni(plugin: str) -> Path:
    return Path("/usr/lib/cni") / plugin


# --- small helpers ---------------------------------------------------------------------------


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


def _wait(ready: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll `ready` until it returns something true; seconds it took."""
    start = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - start < timeout:
        try:
            if ready():
                return time.monotonic() - start
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            last = err
        time.sleep(interval)
    raise StartupError(f"{what} not ready after {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


# --- the machine-wide bookkeeping: which nodes run, the sysctls they changed --------------------


@dataclass(frozen=True)
class Slot:
    """Names and addresses derived from a node's index, so a stale node can be found again."""

    index: int

    @property
    def netns(self) -> str:
        return f"aikeys-n{self.index}"

    @property
    def host_link(self) -> str:
        return f"aikn{self.index}h"

    @property
    def node_link(self) -> str:
        return f"aikn{self.index}n"

    @property
    def host_ip(self) -> str:
        return f"10.200.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.200.{self.index}.2"

    @property
    def cgroup_root(self) -> str:
        return f"/aikeys-n{self.index}"

    @property
    def lease(self) -> Path:
        return STATE_ROOT / f"n{self.index}.json"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns


SYSCTL_FILE = STATE_ROOT / "sysctls.json"


@contextmanager
def _lock() -> Iterator[None]:
    """One launcher at a time changes the bookkeeping in STATE_ROOT."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with (STATE_ROOT / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _lease_owner(slot: Slot) -> int | None:
    try:
        return int(json.loads(slot.lease.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def live_slots() -> list[Slot]:
    return [s for s in map(Slot, range(MAX_NODES)) if (pid := _lease_owner(s)) and pid_alive(pid)]


def _save_sysctls() -> None:
    if not SYSCTL_FILE.exists():
        SYSCTL_FILE.write_text(json.dumps({name: read_sysctl(name) for name in KUBELET_SYSCTLS}))


def _restore_sysctls_if_last() -> None:
    """Put back the values saved before the first node started, once no node runs any more."""
    if live_slots() or not SYSCTL_FILE.exists():
        return
    saved: dict[str, str] = json.loads(SYSCTL_FILE.read_text())
    for name, value in saved.items():
        if read_sysctl(name) != value:
            write_sysctl(name, value)
    SYSCTL_FILE.unlink()


def _claim_slot(owner: int, workdir: Path) -> Slot:
    for slot in map(Slot, range(MAX_NODES)):
        pid = _lease_owner(slot)
        if pid is not None and pid_alive(pid):
            continue
        if pid is not None or slot.netns_path.exists():
            _teardown_slot(slot)  # a launcher that was killed left this one
        slot.lease.write_text(json.dumps({"pid": owner, "workdir": str(workdir)}))
        return slot
    raise RuntimeError(f"all {MAX_NODES} node slots are in use")


# --- teardown (also of nodes whose launcher died) --------------------------------------------


def _ns_inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pids_in_netns(slot: Slot) -> list[int]:
    target = _ns_inode(slot.netns_path)
    if target is None:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _ns_inode(proc / "ns" / "net") == target:
            found.append(int(proc.name))
    return found


def _cgroup_dirs(slot: Slot) -> list[Path]:
    """The node's cgroup trees, one per v1 hierarchy (and the unified one)."""
    base = Path("/sys/fs/cgroup")
    trees = [base / slot.cgroup_root.lstrip("/")]
    if base.is_dir():
        trees += [h / slot.cgroup_root.lstrip("/") for h in base.iterdir() if h.is_dir()]
    return [t for t in trees if t.is_dir()]


def _pids_in_cgroups(slot: Slot) -> list[int]:
    pids: set[int] = set()
    for tree in _cgroup_dirs(slot):
        for directory, _, files in os.walk(tree):  # cgroups vanish while we walk: os.walk skips them
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
    return sorted(pids)


def _kill_all(pids_of: Callable[[], list[int]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while pids := pids_of():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes in the {what} did not die: {pids}")
        time.sleep(0.05)


def _remove_cgroups(slot: Slot, timeout: float = 10) -> None:
    """rmdir every cgroup of the node, deepest first; a cgroup whose last task is still exiting
    is busy for a moment, so try again until the timeout."""
    deadline = time.monotonic() + timeout
    while trees := _cgroup_dirs(slot):
        for tree in trees:
            for directory, _, _ in os.walk(tree, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"cgroups of the node could not be removed: {[str(t) for t in _cgroup_dirs(slot)]}"
            )
        time.sleep(0.1)


def _attempt(errors: list[str], step: Callable[[], object]) -> None:
    """Run one teardown step; a failure is recorded and the next steps still run."""
    try:
        step()
    except Exception as err:
        errors.append(f"{getattr(step, '__name__', 'step')}: {err}")


def _teardown_slot(slot: Slot) -> None:
    """Kill everything of the node in `slot`, remove its cgroups and namespace (idempotent).
    Every step runs even when an earlier one failed; the failures are raised together at the end."""
    errors: list[str] = []
    _attempt(errors, lambda: _kill_all(lambda: _pids_in_cgroups(slot), "node's cgroups"))
    _attempt(errors, lambda: _kill_all(lambda: _pids_in_netns(slot), "node's network namespace"))
    _attempt(errors, lambda: _remove_cgroups(slot))
    if slot.netns_path.exists():
        _attempt(errors, lambda: _run("ip", "netns", "delete", slot.netns))
    # the veth pair goes with the namespace; the kernel frees it asynchronously
    _attempt(
        errors, lambda: _wait(lambda: not Path("/sys/class/net", slot.host_link).exists(), 10, "veth gone")
    )
    created: list[str] = []
    with contextlib.suppress(FileNotFoundError, ValueError):
        created = json.loads(slot.lease.read_text()).get("created", [])
    slot.lease.unlink(missing_ok=True)
    # directories made on the host as mount points (another running node may still use them)
    if not live_slots():
        for directory in created:
            with contextlib.suppress(OSError):
                Path(directory).rmdir()
    if errors:
        raise RuntimeError(f"teardown of {slot.netns} incomplete: {'; '.join(errors)}")


def _reap() -> list[str]:
    removed = []
    for slot in map(Slot, range(MAX_NODES)):
        pid = _lease_owner(slot)
        if (pid is not None and not pid_alive(pid)) or (pid is None and slot.netns_path.exists()):
            _teardown_slot(slot)
            removed.append(slot.netns)
    return removed


def reap_stale() -> list[str]:
    """Tear down nodes whose launcher is gone and restore the sysctls when none is left; returns
    the namespaces removed (`make cluster-down`; every launch does the first part too)."""
    with _lock():
        removed = _reap()
        _restore_sysctls_if_last()
    return removed


# --- configuration files ---------------------------------------------------------------------


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


def addons_manifest(node_ip: str, versions: dict[str, str]) -> str:
    """CoreDNS (cluster DNS at CLUSTER_DNS, nothing forwarded) and Traefik (Ingress controller on
    the node's port 80, default IngressClass `traefik`), with images that are never pulled."""
    coredns = COREDNS_IMAGE.format(version=versions["COREDNS_VERSION"])
    traefik = TRAEFIK_IMAGE.format(version=versions["TRAEFIK_VERSION"])
    return f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    cluster.local in-addr.arpa ip6.arpa {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            ttl 30
        }}
        cache 30
        loadbalance
    }}
    . {{
        errors
        # no forward plugin: nothing outside the cluster is ever asked
        template ANY ANY {{
            rcode NXDOMAIN
        }}
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {coredns}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{add: [NET_BIND_SERVICE], drop: [ALL]}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {CLUSTER_DNS}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: traefik, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: traefik-ingress}}
rules:
- apiGroups: [""]
  resources: [services, secrets, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: traefik-ingress}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: traefik-ingress}}
subjects: [{{kind: ServiceAccount, name: traefik, namespace: kube-system}}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {INGRESS_CLASS}
  annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {{controller: traefik.io/ingress-controller}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: traefik, namespace: kube-system, labels: {{app: traefik}}}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: traefik}}}}
  template:
    metadata: {{labels: {{app: traefik}}}}
    spec:
      serviceAccountName: traefik
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      containers:
      - name: traefik
        image: {traefik}
        imagePullPolicy: Never
        args:
        - --entryPoints.web.address=:80
        - --entryPoints.traefik.address=:9000
        - --ping=true
        - --providers.kubernetesIngress=true
        - --providers.kubernetesIngress.ingressEndpoint.ip={node_ip}
        # Traefik's standard proxy cut 2-8 % of streamed (SSE) responses before their last chunk here
        # ("ReverseProxy read error during body copy: use of closed network connection", traefik
        # issue 11767); its fast proxy streamed 1,000 of 1,000 and flushes every event
        - --experimental.fastProxy=true
        - --global.checkNewVersion=false
        - --global.sendAnonymousUsage=false
        - --log.level=INFO
        - --accessLog=true
        readinessProbe: {{httpGet: {{path: /ping, port: 9000}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /ping, port: 9000}}, periodSeconds: 10}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{add: [NET_BIND_SERVICE], drop: [ALL]}}
"""


# --- the node ----------------------------------------------------------------------------------


@dataclass
class Node:
    """A running node; `cp` is its control plane (kubeconfig, kubectl), `url` its Ingress."""

    slot: Slot
    workdir: Path
    binaries: NodeBinaries
    cp: ControlPlane | None = None
    holder: Child | None = None
    children: dict[str, Child] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stopped: bool = False

    @property
    def state(self) -> Path:
        return self.workdir / "node"

    @property
    def ip(self) -> str:
        return self.slot.node_ip

    @property
    def ingress_url(self) -> str:
        return f"http://{self.ip}"

    @property
    def control_plane(self) -> ControlPlane:
        assert self.cp is not None, "the node's control plane is not running"
        return self.cp

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, stdin=stdin, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries.control_plane.helm), *args],
            capture_output=True,
            text=True,
            env=self.control_plane.env(),
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def wrap(self) -> tuple[str, ...]:
        """argv prefix: run inside the node's network and mount namespaces."""
        assert self.holder is not None
        return ("nsenter", f"--net={self.slot.netns_path}", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--")

    def nsexec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's namespaces (e.g. `ip route`, `iptables-save`)."""
        return _run(*self.wrap(), *argv, check=check)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        sock = str(INNER / "containerd.sock")
        return self.nsexec("ctr", "--address", sock, "-n", "k8s.io", *args, check=check)

    def memory_mib(self) -> float:
        """Resident memory of every process of the node: control plane, kubelet, containerd and
        its shims (its network namespace) and all containers (its cgroups)."""
        total = 0
        for pid in set(_pids_in_netns(self.slot)) | set(_pids_in_cgroups(self.slot)):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- bring-up ----------------------------------------------------------------------------

    def _network(self) -> None:
        s = self.slot
        _run("ip", "netns", "add", s.netns)
        _run("ip", "link", "add", s.host_link, "type", "veth", "peer", "name", s.node_link, "netns", s.netns)
        _run("ip", "addr", "add", f"{s.host_ip}/30", "dev", s.host_link)
        _run("ip", "link", "set", s.host_link, "up")
        inside = ("ip", "netns", "exec", s.netns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{s.node_ip}/30", "dev", s.node_link)
        _run(*inside, "ip", "link", "set", s.node_link, "up")
        # the default route (the kubelet and kube-proxy want one) leads into a bridge without ports
        _run(*inside, "ip", "link", "add", "drop0", "type", "bridge")
        _run(*inside, "ip", "link", "set", "drop0", "up")
        _run(*inside, "ip", "route", "add", "default", "dev", "drop0")
        # pods never reach the host side of the veth
        _run(*inside, "iptables", "-I", "FORWARD", "-o", s.node_link, "-j", "DROP")

    def _mount_namespace(self) -> None:
        """Start the holder of the node's private mount namespace, with its own /run, /var/log
        and /var/lib/cni (containerd's CNI cache has no setting)."""
        for d in ("var-log", "var-lib-cni"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        cni = Path("/var/lib/cni")
        if not cni.exists():  # a mount point is needed; the last node to stop removes it again
            cni.mkdir(parents=True)
            lease = json.loads(self.slot.lease.read_text())
            self.slot.lease.write_text(json.dumps({**lease, "created": [str(cni)]}))
        ready = self.state / "mounts-ready"
        # no resolver: a name the node's processes look up must not become a query to this
        # machine's DNS server (which the namespace could not reach anyway); the node's own name
        # is in its hosts file
        (self.state / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
        (self.state / "hosts").write_text(f"127.0.0.1 localhost\n{self.ip} {NODE_NAME}\n")
        script = (
            "set -e; mount -t tmpfs -o mode=0755 aikeys-run /run; "
            f"mkdir {INNER}; mount --bind {self.state} {INNER}; "
            f"mount --bind {self.state / 'var-log'} /var/log; "
            f"mount --bind {self.state / 'var-lib-cni'} /var/lib/cni; "
            f"mount --bind {self.state / 'resolv.conf'} /etc/resolv.conf; "
            f"mount --bind {self.state / 'hosts'} /etc/hosts; "
            f"touch {ready}; exec sleep infinity"
        )
        argv = [
            "nsenter",
            f"--net={self.slot.netns_path}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sh",
            "-c",
            script,
        ]
        self.holder = Child("mount-namespace", argv, self.workdir / "logs" / "mount-namespace.log").start()
        self.holder.wait_until(ready.exists, timeout=10, what="holding the mount namespace")

    def _kubelet_client_pki(self) -> tuple[Path, Path, Path]:
        """A CA the kubelet trusts for client certificates, and the apiserver's certificate from it
        (exec, logs, port-forward go apiserver → kubelet); returns (ca, cert, key)."""
        directory = self.state / "kubelet-pki"
        directory.mkdir(parents=True, exist_ok=True)
        ca = make_ca("aikeys-kubelet-client-ca")
        write_pair(*ca, directory / "ca.crt", directory / "ca.key")
        pair = write_pair(
            *sign(ca, "kube-apiserver-kubelet-client", organizations=("system:masters",)),
            directory / "apiserver.crt",
            directory / "apiserver.key",
        )
        return directory / "ca.crt", pair.cert, pair.key

    def _control_plane(self) -> None:
        kcm_flex = self.state / "flex-volumes"
        kcm_flex.mkdir(parents=True, exist_ok=True)
        _, client_cert, client_key = self._kubelet_client_pki()
        cp_dir = self.workdir / "controlplane"
        self.cp = launch(
            cp_dir,
            self.binaries.control_plane,
            address=self.ip,
            wrap=self.wrap(),
            controllers=("*",),
            extra_ips=(KUBERNETES_SERVICE_IP,),
            extra_args={
                "kube-apiserver": [
                    f"--kubelet-client-certificate={client_cert}",
                    f"--kubelet-client-key={client_key}",
                    "--allow-privileged=true",
                    "--kubelet-preferred-address-types=InternalIP",
                ],
                "kube-controller-manager": [
                    f"--flex-volume-plugin-dir={kcm_flex}",
                    f"--cluster-signing-cert-file={cp_dir / 'pki' / 'ca.crt'}",
                    f"--cluster-signing-key-file={cp_dir / 'pki' / 'ca.key'}",
                ],
            },
        )

    def _containerd(self) -> None:
        state = self.state
        for d in ("cni", "registries", "netns", "ipam", "kubelet"):
            (state / d).mkdir(parents=True, exist_ok=True)
        (state / "cni" / "10-aikeys.conflist").write_text(cni_config(INNER))
        write_registry_hosts(state / "registries")
        pause = PAUSE_IMAGE.format(version=self.binaries.versions["PAUSE_VERSION"])
        (state / "containerd.toml").write_text(containerd_config(INNER, pause))
        closed = f"http://127.0.0.1:{CLOSED_PORT}"
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HTTP_PROXY": closed,
            "HTTPS_PROXY": closed,
            "http_proxy": closed,
            "https_proxy": closed,
            "NO_PROXY": "",
        }
        child = Child(
            "containerd",
            [*self.wrap(), "containerd", "--config", str(INNER / "containerd.toml")],
            self.workdir / "logs" / "containerd.log",
            env=env,
        ).start()
        self.children["containerd"] = child
        child.wait_until(lambda: self.ctr("version", check=False).returncode == 0, timeout=30)

    def import_images(self, archives: list[Path]) -> float:
        """Import docker-archive files into the node's containerd (namespace k8s.io), all at once;
        returns the seconds it took."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, len(archives))) as pool:
            list(
                pool.map(
                    lambda a: self.ctr("images", "import", "--snapshotter", "overlayfs", str(a)), archives
                )
            )
        return time.monotonic() - started

    def _cgroup_root(self) -> None:
        """The kubelet's cgroupRoot must exist in every hierarchy (cpuset initialised from its parent)."""
        base = Path("/sys/fs/cgroup")
        for hierarchy in (h for h in base.iterdir() if h.is_dir()):
            root = hierarchy / self.slot.cgroup_root.lstrip("/")
            root.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / name).exists() and not (root / name).read_text().strip():
                    (root / name).write_text((hierarchy / name).read_text())

    def _kubelet(self) -> None:
        self._cgroup_root()
        cp = self.control_plane
        kubelet_dir = self.state / "kubelet"
        config = kubelet_dir / "config.yaml"
        client_ca = self.state / "kubelet-pki" / "ca.crt"
        config.write_text(yaml.safe_dump(kubelet_config(INNER, self.slot, client_ca)))
        child = Child(
            "kubelet",
            [
                *self.wrap(),
                str(self.binaries.kubelet),
                f"--config={config}",
                f"--kubeconfig={cp.kubeconfig}",
                f"--root-dir={INNER / 'kubelet' / 'root'}",
                f"--cert-dir={INNER / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.ip}",
                "--v=1",
            ],
            self.workdir / "logs" / "kubelet.log",
        ).start()
        self.children["kubelet"] = child
        child.wait_until(self._node_ready, timeout=90, what="a Ready node")

    def _node_ready(self) -> bool:
        out = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _scheduler_and_proxy(self) -> None:
        cp = self.control_plane
        proxy_config = self.state / "kube-proxy.yaml"
        proxy_config.write_text(yaml.safe_dump(kube_proxy_config(cp.kubeconfig)))
        proxy = Child(
            "kube-proxy",
            [*self.wrap(), str(self.binaries.kube_proxy), f"--config={proxy_config}"],
            self.workdir / "logs" / "kube-proxy.log",
        ).start()
        self.children["kube-proxy"] = proxy
        scheduler = Child(
            "kube-scheduler",
            [
                *self.wrap(),
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={cp.kubeconfig}",
                f"--authentication-kubeconfig={cp.kubeconfig}",
                f"--authorization-kubeconfig={cp.kubeconfig}",
                f"--bind-address={self.ip}",
                "--secure-port=10259",
                "--leader-elect=false",
            ],
            self.workdir / "logs" / "kube-scheduler.log",
        ).start()
        self.children["kube-scheduler"] = scheduler
        proxy.wait_until(
            lambda: self.nsexec("iptables", "-t", "nat", "-S", "KUBE-SERVICES", check=False).returncode == 0,
            timeout=30,
            what="programming iptables",
        )

    def _addons(self) -> None:
        _wait(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            60,
            "the default ServiceAccount",
        )
        self.kubectl("apply", "-f", "-", stdin=addons_manifest(self.ip, self.binaries.versions))
        for name in ("coredns", "traefik"):
            self.kubectl("rollout", "status", f"deployment/{name}", "-n", "kube-system", "--timeout=120s")

    def start(self, images: list[Path], addons: bool = True) -> Node:
        """Bring everything up; the images are imported while the control plane starts."""
        t0 = time.monotonic()

        def timed(name: str, step: Callable[[], object]) -> None:
            started = time.monotonic()
            step()
            self.timings[name] = time.monotonic() - started

        timed("network", self._network)
        timed("mounts", self._mount_namespace)
        timed("containerd", self._containerd)
        with ThreadPoolExecutor(max_workers=1) as pool:
            imported: Future[float] = pool.submit(self.import_images, images)
            try:
                timed("control plane", self._control_plane)
            finally:
                self.timings["images imported"] = imported.result()
        timed("kubelet (node Ready)", self._kubelet)
        timed("scheduler and proxy", self._scheduler_and_proxy)
        if addons:
            timed("CoreDNS and Traefik Ready", self._addons)
        self.timings["total"] = time.monotonic() - t0
        return self

    # --- teardown ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything and leave the machine as it was; safe to call more than once."""
        if self.stopped:
            return  # the slot may belong to another node by now
        self.stopped = True
        errors: list[str] = []
        with _lock():
            try:
                for name in ("kubelet", "kube-proxy", "kube-scheduler"):
                    child = self.children.pop(name, None)
                    if child is not None:
                        _attempt(errors, partial(child.stop, timeout=5))
                # containers and sandboxes, then containerd and its shims
                _attempt(errors, lambda: _kill_all(lambda: _pids_in_cgroups(self.slot), "node's cgroups"))
                child = self.children.pop("containerd", None)
                if child is not None:
                    _attempt(errors, partial(child.stop, timeout=5))
                if self.cp is not None:
                    _attempt(errors, self.cp.stop)
                if self.holder is not None:
                    _attempt(errors, partial(self.holder.stop, timeout=5))
            finally:
                try:
                    _teardown_slot(self.slot)
                finally:
                    _restore_sysctls_if_last()
        # the unpacked images (a GiB or more); logs stay
        shutil.rmtree(self.state / "containerd", ignore_errors=True)
        if errors:
            raise RuntimeError(f"stopping the node: {'; '.join(errors)}")


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C (SystemExit), so `finally: node.stop()` runs; only where
    nobody handles SIGTERM yet (Python's default is to die at once, leaving the node behind)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):

        def raise_exit(signum: int, _frame: object) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, raise_exit)


def launch_node(workdir: Path, images: list[Path], addons: bool = True) -> Node:
    """Bring a node up in `workdir` with `images` (docker archives) imported; caller must `stop()`.

    SIGTERM is turned into SystemExit (`stop_on_sigterm`) so that the caller's cleanup runs."""
    stop_on_sigterm()
    if os.geteuid() != 0:
        raise RuntimeError("a real node needs root (network namespaces, cgroups, mounts)")
    missing = system_missing()
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `make setup` (tools/setup-system.sh)")
    binaries = ensure_node_built()
    workdir.mkdir(parents=True, exist_ok=True)
    with _lock():
        _reap()
        slot = _claim_slot(os.getpid(), workdir)
        _save_sysctls()
    node = Node(slot=slot, workdir=workdir, binaries=binaries)
    try:
        return node.start(images, addons=addons)
    except BaseException:
        node.stop()
        raise


@contextmanager
def start_node(workdir: Path, images: list[Path], addons: bool = True) -> Iterator[Node]:
    node = launch_node(workdir, images, addons=addons)
    try:
        yield node
    finally:
        node.stop()

"""The steps that bring a node up, in order: its network namespace, its mount namespace, containerd
(images imported while the control plane starts), the kubelet, the scheduler and kube-proxy, and
the add-ons; each step's seconds land in `node.timings`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import yaml

from aikeys_dev.devstack.controlplane import launch
from aikeys_dev.devstack.node.addons import addons_manifest
from aikeys_dev.devstack.node.configs import (
    CLOSED_PORT,
    INNER,
    KUBERNETES_SERVICE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    write_registry_hosts,
)
from aikeys_dev.devstack.node.host import run, wait_until
from aikeys_dev.devstack.node.running import Node
from aikeys_dev.devstack.pki import make_ca, sign, write_pair
from aikeys_dev.devstack.processes import Child


def _network(node: Node) -> None:
    s = node.slot
    run("ip", "netns", "add", s.netns)
    run("ip", "link", "add", s.host_link, "type", "veth", "peer", "name", s.node_link, "netns", s.netns)
    run("ip", "addr", "add", f"{s.host_ip}/30", "dev", s.host_link)
    run("ip", "link", "set", s.host_link, "up")
    inside = ("ip", "netns", "exec", s.netns)
    run(*inside, "ip", "link", "set", "lo", "up")
    run(*inside, "ip", "addr", "add", f"{s.node_ip}/30", "dev", s.node_link)
    run(*inside, "ip", "link", "set", s.node_link, "up")
    # the default route (the kubelet and kube-proxy want one) leads into a bridge without ports
    run(*inside, "ip", "link", "add", "drop0", "type", "bridge")
    run(*inside, "ip", "link", "set", "drop0", "up")
    run(*inside, "ip", "route", "add", "default", "dev", "drop0")
    # pods never reach the host side of the veth
    run(*inside, "iptables", "-I", "FORWARD", "-o", s.node_link, "-j", "DROP")


def _mount_namespace(node: Node) -> None:
    """Start the holder of the node's private mount namespace, with its own /run, /var/log
    and /var/lib/cni (containerd's CNI cache has no setting)."""
    for d in ("var-log", "var-lib-cni"):
        (node.state / d).mkdir(parents=True, exist_ok=True)
    cni = Path("/var/lib/cni")
    if not cni.exists():  # a mount point is needed; the last node to stop removes it again
        cni.mkdir(parents=True)
        lease = json.loads(node.slot.lease.read_text())
        node.slot.lease.write_text(json.dumps({**lease, "created": [str(cni)]}))
    ready = node.state / "mounts-ready"
    # no resolver: a name the node's processes look up must not become a query to this
    # machine's DNS server (which the namespace could not reach anyway); the node's own name
    # is in its hosts file
    (node.state / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
    (node.state / "hosts").write_text(f"127.0.0.1 localhost\n{node.ip} {NODE_NAME}\n")
    script = (
        "set -e; mount -t tmpfs -o mode=0755 aikeys-run /run; "
        f"mkdir {INNER}; mount --bind {node.state} {INNER}; "
        f"mount --bind {node.state / 'var-log'} /var/log; "
        f"mount --bind {node.state / 'var-lib-cni'} /var/lib/cni; "
        f"mount --bind {node.state / 'resolv.conf'} /etc/resolv.conf; "
        f"mount --bind {node.state / 'hosts'} /etc/hosts; "
        f"touch {ready}; exec sleep infinity"
    )
    argv = [
        "nsenter",
        f"--net={node.slot.netns_path}",
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
    node.holder = Child("mount-namespace", argv, node.workdir / "logs" / "mount-namespace.log").start()
    node.holder.wait_until(ready.exists, timeout=10, what="holding the mount namespace")


def _kubelet_client_pki(node: Node) -> tuple[Path, Path, Path]:
    """A CA the kubelet trusts for client certificates, and the apiserver's certificate from it
    (exec, logs, port-forward go apiserver → kubelet); returns (ca, cert, key)."""
    directory = node.state / "kubelet-pki"
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("aikeys-kubelet-client-ca")
    write_pair(*ca, directory / "ca.crt", directory / "ca.key")
    pair = write_pair(
        *sign(ca, "kube-apiserver-kubelet-client", organizations=("system:masters",)),
        directory / "apiserver.crt",
        directory / "apiserver.key",
    )
    return directory / "ca.crt", pair.cert, pair.key


def _control_plane(node: Node) -> None:
    kcm_flex = node.state / "flex-volumes"
    kcm_flex.mkdir(parents=True, exist_ok=True)
    _, client_cert, client_key = _kubelet_client_pki(node)
    cp_dir = node.workdir / "controlplane"
    node.cp = launch(
        cp_dir,
        node.binaries.control_plane,
        address=node.ip,
        wrap=node.wrap(),
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


def _containerd(node: Node) -> None:
    state = node.state
    for d in ("cni", "registries", "netns", "ipam", "kubelet"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "cni" / "10-aikeys.conflist").write_text(cni_config(INNER))
    write_registry_hosts(state / "registries")
    pause = PAUSE_IMAGE.format(version=node.binaries.versions["PAUSE_VERSION"])
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
        [*node.wrap(), "containerd", "--config", str(INNER / "containerd.toml")],
        node.workdir / "logs" / "containerd.log",
        env=env,
    ).start()
    node.children["containerd"] = child
    child.wait_until(lambda: node.ctr("version", check=False).returncode == 0, timeout=30)


def import_images(node: Node, archives: list[Path]) -> float:
    """Import docker-archive files into the node's containerd (namespace k8s.io), all at once;
    returns the seconds it took."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(archives))) as pool:
        list(pool.map(lambda a: node.ctr("images", "import", "--snapshotter", "overlayfs", str(a)), archives))
    return time.monotonic() - started


def _cgroup_root(node: Node) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy (cpuset initialised from its parent)."""
    base = Path("/sys/fs/cgroup")
    for hierarchy in (h for h in base.iterdir() if h.is_dir()):
        root = hierarchy / node.slot.cgroup_root.lstrip("/")
        root.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists() and not (root / name).read_text().strip():
                (root / name).write_text((hierarchy / name).read_text())


def _kubelet(node: Node) -> None:
    _cgroup_root(node)
    cp = node.control_plane
    kubelet_dir = node.state / "kubelet"
    config = kubelet_dir / "config.yaml"
    client_ca = node.state / "kubelet-pki" / "ca.crt"
    config.write_text(yaml.safe_dump(kubelet_config(INNER, node.slot, client_ca)))
    child = Child(
        "kubelet",
        [
            *node.wrap(),
            str(node.binaries.kubelet),
            f"--config={config}",
            f"--kubeconfig={cp.kubeconfig}",
            f"--root-dir={INNER / 'kubelet' / 'root'}",
            f"--cert-dir={INNER / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={node.ip}",
            "--v=1",
        ],
        node.workdir / "logs" / "kubelet.log",
    ).start()
    node.children["kubelet"] = child
    child.wait_until(partial(_node_ready, node), timeout=90, what="a Ready node")


def _node_ready(node: Node) -> bool:
    out = node.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    conditions = json.loads(out.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _scheduler_and_proxy(node: Node) -> None:
    cp = node.control_plane
    proxy_config = node.state / "kube-proxy.yaml"
    proxy_config.write_text(yaml.safe_dump(kube_proxy_config(cp.kubeconfig)))
    proxy = Child(
        "kube-proxy",
        [*node.wrap(), str(node.binaries.kube_proxy), f"--config={proxy_config}"],
        node.workdir / "logs" / "kube-proxy.log",
    ).start()
    node.children["kube-proxy"] = proxy
    scheduler = Child(
        "kube-scheduler",
        [
            *node.wrap(),
            str(node.binaries.kube_scheduler),
            f"--kubeconfig={cp.kubeconfig}",
            f"--authentication-kubeconfig={cp.kubeconfig}",
            f"--authorization-kubeconfig={cp.kubeconfig}",
            f"--bind-address={node.ip}",
            "--secure-port=10259",
            "--leader-elect=false",
        ],
        node.workdir / "logs" / "kube-scheduler.log",
    ).start()
    node.children["kube-scheduler"] = scheduler
    proxy.wait_until(
        lambda: node.nsexec("iptables", "-t", "nat", "-S", "KUBE-SERVICES", check=False).returncode == 0,
        timeout=30,
        what="programming iptables",
    )


def _addons(node: Node) -> None:
    wait_until(
        lambda: node.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        60,
        "the default ServiceAccount",
    )
    node.kubectl("apply", "-f", "-", stdin=addons_manifest(node.ip, node.binaries.versions))
    for name in ("coredns", "traefik"):
        node.kubectl("rollout", "status", f"deployment/{name}", "-n", "kube-system", "--timeout=120s")


def bring_up(node: Node, images: list[Path], addons: bool = True) -> Node:
    """Bring everything up; the images are imported while the control plane starts."""
    t0 = time.monotonic()

    def timed(name: str, step: Callable[[], object]) -> None:
        started = time.monotonic()
        step()
        node.timings[name] = time.monotonic() - started

    timed("network", partial(_network, node))
    timed("mounts", partial(_mount_namespace, node))
    timed("containerd", partial(_containerd, node))
    with ThreadPoolExecutor(max_workers=1) as pool:
        imported: Future[float] = pool.submit(import_images, node, images)
        try:
            timed("control plane", partial(_control_plane, node))
        finally:
            node.timings["images imported"] = imported.result()
    timed("kubelet (node Ready)", partial(_kubelet, node))
    timed("scheduler and proxy", partial(_scheduler_and_proxy, node))
    if addons:
        timed("CoreDNS and Traefik Ready", partial(_addons, node))
    node.timings["total"] = time.monotonic() - t0
    return node


# --- teardown ----------------------------------------------------------------------------

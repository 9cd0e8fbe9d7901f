"""What a node runs beside the control plane (tools/k8s/build.sh --node), and the Debian commands it
needs; built or named when missing."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.binaries import BUILD_SCRIPT, Binaries, cache_dir, ensure_built, read_versions


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

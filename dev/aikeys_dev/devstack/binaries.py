"""Where the Go-built control plane binaries live, and building them when they are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]  # dev/aikeys_dev/devstack/binaries.py
BUILD_SCRIPT = REPO_ROOT / "tools" / "k8s" / "build.sh"
VERSIONS_FILE = REPO_ROOT / "tools" / "k8s" / "versions.env"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of tools/k8s/versions.env (comments and blanks ignored)."""
    pairs: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def cache_dir() -> Path:
    return Path(os.environ.get("AIKEYS_CACHE", Path.home() / ".cache" / "aikeys"))


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the pinned binaries, and the Kubernetes version they report."""

    k8s_version: str
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    helm: Path

    def missing(self) -> list[Path]:
        paths = [self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kubectl, self.helm]
        return [p for p in paths if not os.access(p, os.X_OK)]


def locate() -> Binaries:
    v = read_versions()
    bin_dir = cache_dir() / "bin"
    k8s = bin_dir / f"k8s-{v['K8S_VERSION']}"
    return Binaries(
        k8s_version=v["K8S_VERSION"],
        etcd=bin_dir / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kubectl=k8s / "kubectl",
        helm=bin_dir / f"helm-{v['HELM_VERSION']}" / "helm",
    )


def ensure_built() -> Binaries:
    """Return the binaries, running tools/k8s/build.sh first when any is missing.

    The build prints its own progress; the cold build takes a while (see README).
    """
    found = locate()
    if found.missing():
        print(f"aikeys: building the control plane into {cache_dir()} (first run only) ...", file=sys.stderr)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
        found = locate()
        if found.missing():
            raise RuntimeError(f"build finished but binaries are missing: {found.missing()}")
    return found

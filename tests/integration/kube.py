"""Helpers for tests that need the aikeys API on the real control plane."""

from __future__ import annotations

from aikeys.crds import REPO_CRDS
from aikeys.devstack.controlplane import ControlPlane
from aikeys.resources import KINDS


def install_crds(cp: ControlPlane) -> None:
    """Apply crds/ (idempotent) and wait until every CRD is Established."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_CRDS))
    for kind in KINDS:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")

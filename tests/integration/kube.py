"""Helpers for tests that need the aikeys API on the real control plane."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aikeys.crds import REPO_CRDS
from aikeys.devstack.controlplane import ControlPlane
from aikeys.resources import KINDS


def install_crds(cp: ControlPlane) -> None:
    """Apply crds/ (idempotent) and wait until every CRD is Established."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_CRDS))
    for kind in KINDS:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object as JSON, or None when it does not exist."""
    result = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise RuntimeError(result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `fn` until it returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def apply(cp: ControlPlane, manifest: str, namespace: str) -> None:
    cp.kubectl("apply", "-n", namespace, "-f", "-", stdin=textwrap.dedent(manifest))


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cp.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items

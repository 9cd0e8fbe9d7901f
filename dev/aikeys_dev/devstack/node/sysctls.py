"""The machine-wide sysctls the kubelet changes: saved before the first node starts, restored once
the last one has stopped."""

from __future__ import annotations

import json
from pathlib import Path

from aikeys_dev.devstack.node.slots import STATE_ROOT, live_slots

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
SYSCTL_FILE = STATE_ROOT / "sysctls.json"


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


def save_sysctls() -> None:
    if not SYSCTL_FILE.exists():
        SYSCTL_FILE.write_text(json.dumps({name: read_sysctl(name) for name in KUBELET_SYSCTLS}))


def restore_sysctls_if_last() -> None:
    """Put back the values saved before the first node started, once no node runs any more."""
    if live_slots() or not SYSCTL_FILE.exists():
        return
    saved: dict[str, str] = json.loads(SYSCTL_FILE.read_text())
    for name, value in saved.items():
        if read_sysctl(name) != value:
            write_sysctl(name, value)
    SYSCTL_FILE.unlink()

"""What a node leaves on the machine, found and removed: its processes (by network namespace and by
cgroup), its cgroups, its namespace and veth pair, the mount points it made; also for nodes whose
launcher was killed (`reap`, `reap_stale`), and before a slot is claimed again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aikeys_dev.devstack.node.host import run, wait_until
from aikeys_dev.devstack.node.slots import MAX_NODES, Slot, lease_owner, live_slots, lock
from aikeys_dev.devstack.node.sysctls import restore_sysctls_if_last
from aikeys_dev.devstack.processes import pid_alive


def _ns_inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(slot: Slot) -> list[int]:
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


def pids_in_cgroups(slot: Slot) -> list[int]:
    pids: set[int] = set()
    for tree in _cgroup_dirs(slot):
        for directory, _, files in os.walk(tree):  # cgroups vanish while we walk: os.walk skips them
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
    return sorted(pids)


def kill_all(pids_of: Callable[[], list[int]], what: str, timeout: float = 20) -> None:
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


def attempt(errors: list[str], step: Callable[[], object]) -> None:
    """Run one teardown step; a failure is recorded and the next steps still run."""
    try:
        step()
    except Exception as err:
        errors.append(f"{getattr(step, '__name__', 'step')}: {err}")


def teardown_slot(slot: Slot) -> None:
    """Kill everything of the node in `slot`, remove its cgroups and namespace (idempotent).
    Every step runs even when an earlier one failed; the failures are raised together at the end."""
    errors: list[str] = []
    attempt(errors, lambda: kill_all(lambda: pids_in_cgroups(slot), "node's cgroups"))
    attempt(errors, lambda: kill_all(lambda: pids_in_netns(slot), "node's network namespace"))
    attempt(errors, lambda: _remove_cgroups(slot))
    if slot.netns_path.exists():
        attempt(errors, lambda: run("ip", "netns", "delete", slot.netns))
    # the veth pair goes with the namespace; the kernel frees it asynchronously
    attempt(
        errors,
        lambda: wait_until(lambda: not Path("/sys/class/net", slot.host_link).exists(), 10, "veth gone"),
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


def reap() -> list[str]:
    removed = []
    for slot in map(Slot, range(MAX_NODES)):
        pid = lease_owner(slot)
        if (pid is not None and not pid_alive(pid)) or (pid is None and slot.netns_path.exists()):
            teardown_slot(slot)
            removed.append(slot.netns)
    return removed


def reap_stale() -> list[str]:
    """Tear down nodes whose launcher is gone and restore the sysctls when none is left; returns
    the namespaces removed (`make cluster-down`; every launch does the first part too)."""
    with lock():
        removed = reap()
        restore_sysctls_if_last()
    return removed


def claim_slot(owner: int, workdir: Path) -> Slot:
    for slot in map(Slot, range(MAX_NODES)):
        pid = lease_owner(slot)
        if pid is not None and pid_alive(pid):
            continue
        if pid is not None or slot.netns_path.exists():
            teardown_slot(slot)  # a launcher that was killed left this one
        slot.lease.write_text(json.dumps({"pid": owner, "workdir": str(workdir)}))
        return slot
    raise RuntimeError(f"all {MAX_NODES} node slots are in use")

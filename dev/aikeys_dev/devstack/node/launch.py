"""Starting a node: claim a free slot (reaping what killed launchers left), save the sysctls, bring
it up, and make SIGTERM unwind so that the caller's `stop()` always runs."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aikeys_dev.devstack.node.binaries import ensure_node_built, system_missing
from aikeys_dev.devstack.node.bringup import bring_up
from aikeys_dev.devstack.node.running import Node
from aikeys_dev.devstack.node.slots import lock
from aikeys_dev.devstack.node.sysctls import save_sysctls
from aikeys_dev.devstack.node.teardown import claim_slot, reap


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
    with lock():
        reap()
        slot = claim_slot(os.getpid(), workdir)
        save_sysctls()
    node = Node(slot=slot, workdir=workdir, binaries=binaries)
    try:
        return bring_up(node, images, addons=addons)
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

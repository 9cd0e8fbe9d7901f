"""A node's slot: the names and addresses derived from its index, and the machine-wide leases in
STATE_ROOT that say which launcher holds which slot, so a node whose launcher died can be found."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.processes import pid_alive

MAX_NODES = 16  # 10.200.0.0/30 ... 10.200.15.0/30
STATE_ROOT = Path(os.environ.get("AIKEYS_NODE_STATE", "/run/aikeys-node"))  # machine-wide, gone on reboot


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


@contextmanager
def lock() -> Iterator[None]:
    """One launcher at a time changes the bookkeeping in STATE_ROOT."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with (STATE_ROOT / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def lease_owner(slot: Slot) -> int | None:
    try:
        return int(json.loads(slot.lease.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def live_slots() -> list[Slot]:
    return [s for s in map(Slot, range(MAX_NODES)) if (pid := lease_owner(s)) and pid_alive(pid)]

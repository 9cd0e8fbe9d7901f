"""CPU time of process trees from /proc: utime+stime of a pid and all its descendants.

A uvicorn parent with `--workers N` forks its workers; summing the tree counts them all. Read it
just before and just after a load run; the difference divided by the requests served is the CPU
one request cost, whatever the number of processes. `others_share` says how much of the machine
other work took meanwhile (from /proc/stat), so a report can say how quiet its runs were.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _procs() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime in clock ticks) for every live process."""
    procs: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # exited while we looked
        procs[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime+stime
    return procs


def tree_seconds(root: int, procs: Mapping[int, tuple[int, int]] | None = None) -> float:
    """CPU seconds `root` and its live descendants have used so far."""
    procs = procs if procs is not None else _procs()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        ticks += procs.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return ticks / TICKS


def snapshot(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree, read at one moment."""
    procs = _procs()
    return {name: tree_seconds(pid, procs) for name, pid in roots.items()}


def per_request_us(
    before: Mapping[str, float], after: Mapping[str, float], requests: int
) -> dict[str, float]:
    """µs of CPU per request of each tree between two snapshots."""
    return {name: (after[name] - before[name]) * 1e6 / max(requests, 1) for name in before}


def _machine_seconds() -> float:
    """CPU seconds every core of the machine has been busy since boot (/proc/stat: all but idle
    and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


def _own_seconds() -> float:
    """CPU seconds of this process, its live descendants and the children it has reaped (wrk)."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return tree_seconds(os.getpid()) + reaped.ru_utime + reaped.ru_stime


@dataclass(frozen=True)
class Machine:
    """A moment's count of what the whole machine and this bench have run (`others_share`)."""

    at: float
    busy: float
    own: float

    @classmethod
    def now(cls) -> Machine:
        return cls(time.monotonic(), _machine_seconds(), _own_seconds())


def others_share(before: Machine, after: Machine) -> float:
    """The share of the machine's cores (0–1) that processes outside this bench used in between:
    other people's work, which makes a run noisier, never cheaper."""
    elapsed = max(after.at - before.at, 1e-9)
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(others, 0.0) / (elapsed * (os.cpu_count() or 1))

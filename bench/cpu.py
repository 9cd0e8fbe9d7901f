"""CPU time of process trees from /proc: utime+stime of a pid and all its descendants.

A uvicorn parent with `--workers N` forks its workers; summing the tree counts them all. Read it
just before and just after a load run; the difference divided by the requests served is the CPU
one request cost, whatever the number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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

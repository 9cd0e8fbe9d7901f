"""Whom a client is connected to, seen from outside it: the far ends of the TCP connections that
a process group holds, read from Linux's /proc while it runs.

A watch samples every `interval` seconds, so a connection opened and closed in between escapes it;
the tests pair it with `harness.ProxyTrap`, which catches every HTTP(S) request a client tries to
send elsewhere. Together they show a client talking to loopback only."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
from pathlib import Path

LISTEN = "0A"  # /proc/net/tcp's state of a listening socket

Peer = tuple[str, int]


def _group(pgid: int) -> list[int]:
    """The processes of a process group (a `processes.Child` leads its own, as does a program
    started with `start_new_session`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            found.append(int(entry.name))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)  # the kernel prints each 32-bit word in host order
    packed = struct.pack(f">{len(words)}I", *words)
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def _far_ends(pid: int, inodes: set[str]) -> set[Peer]:
    """The far ends of those of `inodes` that are connected TCP sockets (in `pid`'s network
    namespace's tables)."""
    found: set[Peer] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] not in inodes or fields[3] == LISTEN:
                continue
            ip, port = fields[2].split(":")
            if int(port, 16):
                found.add((_address(ip), int(port, 16)))
    return found


def peers(pgid: int) -> set[Peer]:
    """The far ends of the TCP connections the process group holds now."""
    pids = _group(pgid)
    inodes = set().union(*(_socket_inodes(p) for p in pids))
    return _far_ends(pids[0], inodes) if inodes else set()


def loopback(peer: Peer) -> bool:
    address = ipaddress.ip_address(peer[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class PeerWatch:
    """Samples `peers(pgid)` in a thread until closed; `seen` is every far end it met."""

    def __init__(self, pgid: int, interval: float = 0.2):
        self.pgid = pgid
        self.seen: set[Peer] = set()
        self.samples = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:  # one sample at least, however soon it is closed
            self.seen |= peers(self.pgid)
            self.samples += 1
            if self._stop.wait(self._interval):
                return

    def elsewhere(self) -> list[Peer]:
        """What it saw beyond loopback (what a test asserts is empty)."""
        return sorted(p for p in self.seen if not loopback(p))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

"""A real redis-server on a free loopback port, without persistence (tests, dev stack)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aikeys.devstack.processes import Child, free_port


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


@dataclass
class RedisServer:
    port: int
    child: Child
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            return _ping(self.port)
        except OSError:
            return False

    def start(self) -> RedisServer:
        """(Re)start on the same port, e.g. after a test killed it."""
        self.child.start()
        self.child.wait_until(lambda: _ping(self.port), timeout=20, what="answering PING")
        return self

    def stop(self) -> None:
        self.child.stop()


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise RuntimeError("redis-server not found: run `make setup` (installs Debian's redis-server)")
    return found


def launch_redis(workdir: Path, extra_args: tuple[str, ...] = ()) -> RedisServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
        *extra_args,
    ]
    server = RedisServer(
        port=port, child=Child(f"redis-{port}", argv, workdir / f"redis-{port}.log"), workdir=workdir
    )
    return server.start()


@contextmanager
def start_redis(workdir: Path) -> Iterator[RedisServer]:
    server = launch_redis(workdir)
    try:
        yield server
    finally:
        server.stop()

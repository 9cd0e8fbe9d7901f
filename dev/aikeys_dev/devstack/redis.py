"""A real redis-server on a free loopback port, without persistence (tests, dev stack)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from aikeys_dev.devstack.processes import Child, free_port


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
    port = free_port(also_free_at=10_000) if "--cluster-enabled" in extra_args else free_port()
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


@dataclass
class RedisCluster:
    """A Redis Cluster of `len(nodes)` masters (no replicas) on loopback."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False
    ).stdout
    return "cluster_state:ok" in out


def launch_redis_cluster(workdir: Path, masters: int = 3) -> RedisCluster:
    """Start `masters` redis-servers in cluster mode and join them with `redis-cli --cluster create`."""
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            node_dir = workdir / f"node{i}"
            nodes.append(
                launch_redis(
                    node_dir,
                    ("--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf")),
                )
            )
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        for node in nodes:
            port = node.port
            node.child.wait_until(partial(_cluster_ok, port), timeout=30, what="in a healthy cluster")
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisCluster(nodes)

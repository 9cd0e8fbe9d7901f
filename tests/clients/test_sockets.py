"""The connection watch the client tests rely on for "loopback only" sees a real connection of a
process group, and tells loopback from the rest."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.clients.sockets import PeerWatch, loopback, peers

CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
sys.stdin.read()
"""


def test_peers_of_a_process_group() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        child = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert child.stdin and child.stdout
        try:
            assert child.stdout.readline().strip() == "connected"
            assert peers(child.pid) == {("127.0.0.1", port)}
            watch = PeerWatch(child.pid, interval=0.05)
            watch.close()  # it samples once at least before it stops
            assert watch.samples >= 1 and watch.seen == {("127.0.0.1", port)} and watch.elsewhere() == []
        finally:
            child.stdin.close()
            child.wait(timeout=10)
    assert peers(child.pid) == set()  # gone


def test_loopback() -> None:
    assert loopback(("127.0.0.1", 1)) and loopback(("127.8.9.10", 1)) and loopback(("::1", 1))
    assert loopback(("::ffff:127.0.0.1", 1))
    assert not loopback(("10.0.0.1", 1)) and not loopback(("192.168.1.1", 1))
    assert not loopback(("2001:db8::1", 1)) and not loopback(("::ffff:8.8.8.8", 1))

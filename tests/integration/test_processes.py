"""Servers started by the launcher never outlive whoever started them."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aikeys_dev.devstack.processes import pid_alive

pytestmark = pytest.mark.integration


def _start_owner(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from aikeys_dev.devstack.redis import launch_redis
        server = launch_redis(Path({str(tmp_path)!r}))
        print(server.child.pid, flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    return owner, int(owner.stdout.readline())


def _wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_children_die_when_the_owner_is_killed(tmp_path: Path) -> None:
    owner, redis_pid = _start_owner(tmp_path)
    assert pid_alive(redis_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert _wait_dead(redis_pid), "redis-server outlived its SIGKILLed owner"


def test_children_die_when_the_owner_is_interrupted(tmp_path: Path) -> None:
    owner, redis_pid = _start_owner(tmp_path)
    owner.send_signal(signal.SIGINT)  # KeyboardInterrupt: the pytest Ctrl-C case
    owner.wait(10)
    assert _wait_dead(redis_pid), "redis-server outlived its interrupted owner"

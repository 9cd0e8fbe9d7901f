"""Child processes that cannot outlive their parent.

Every server the dev stack or a test starts goes through `Child`: it gets its own process
group (so Ctrl-C in a terminal reaches us, not it, and we stop it in order) and the kernel's
parent-death signal (so it dies with us even when we are SIGKILLed). Output goes to a log file
whose tail is shown when the child fails to come up.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgrp()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, also_free_at: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    With `also_free_at=N`, port+N must be free too and the port stays below 65535-N (a Redis
    Cluster node listens on its port and on port+10000).
    """
    if also_free_at is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    for _ in range(1000):
        candidate = random.randint(20_000, 65_535 - also_free_at)  # noqa: S311 - not security
        if _bindable(candidate) and _bindable(candidate + also_free_at):
            return candidate
    raise RuntimeError(f"no free port pair {also_free_at} apart")


class StartupError(RuntimeError):
    """A child process exited or did not become ready; the message carries its log's tail."""


class Child:
    """One long-running child process with a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - single-threaded callers
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str = "ready") -> float:
        """Poll `ready` until it is true; return the seconds it took. Fails fast if the child exits."""
        start = time.monotonic()
        while True:
            if not self.alive():
                raise StartupError(f"{self.name} exited before it was {what}; log:\n{self.log_tail()}")
            try:
                if ready():
                    return time.monotonic() - start
            except OSError:
                pass
            if time.monotonic() - start > timeout:
                raise StartupError(f"{self.name} not {what} after {timeout:.0f}s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            self.proc.wait()

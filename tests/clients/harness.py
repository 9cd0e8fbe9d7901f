"""What the real-client tests share: the tenant they run as, running a client program, and the
check that the gateway charged exactly what the mock upstream counted.

"What the mock counted" is found by sending every request body the mock received (as the gateway
forwarded it) to the mock again, unstreamed: its token counts are deterministic, so the usage of
the replay is the usage of the original, streamed or not. Where the client shows the usage it
received, the tests compare that too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from aikeys import connect as connecting
from aikeys.ledger.store import Allocation, Ledger, PeriodState, connect
from aikeys.money import Price
from aikeys.periods import Period
from tests.clients.sockets import PeerWatch
from tests.integration.kube import wait_for

NS = "clients"
ALLOCATION = "main"
# both models, USD per million input / output / cached input tokens (the mock caches a prompt
# prefix it has seen, as OpenAI does: 1,024 tokens or more, in steps of 128)
PRICE = Price.parse("1.00", "2.00", cached_input="0.10")
NATIVE = f"{NS}:native/m"  # the upstream speaks the Responses API itself
CHAT_ONLY = f"{NS}:chatonly/m"  # the gateway translates Responses requests into chat completions
METERED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@dataclass(frozen=True)
class Tenant:
    """The namespace's key and the gateway it uses."""

    base_url: str  # the gateway's OpenAI base URL (…/api/openai/v1)
    key: str


def target(tenant: Tenant, *models: str) -> connecting.Target:
    """What the Connect page and `kubectl aikeys connect` would show for this tenant, with the real
    key in the one place it goes (the environment snippet)."""
    return connecting.Target(tenant.base_url, models, key=tenant.key)


def exports(snippet: connecting.Snippet, environment: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a shell snippet exports (`export NAME=VALUE` lines, `$NAME` expanded from the
    `environment` it is pasted into and earlier lines): what a person who pasted it would have."""
    known = dict(environment or {})
    found: dict[str, str] = {}
    for line in snippet.text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, _, value = word.partition("=")
                for variable in sorted(known, key=len, reverse=True):
                    value = value.replace(f"${variable}", known[variable])
                found[name] = known[name] = value
    return found


def ledger(redis_server: RedisServer, allocation: str = ALLOCATION) -> PeriodState:
    async def read() -> PeriodState:
        c = connect(redis_server.url)
        try:
            return await Ledger(c).period_state(Allocation(NS, allocation, 0, Period.MONTHLY))
        finally:
            await c.aclose()

    return asyncio.run(read())


def charged(
    redis_server: RedisServer, before: PeriodState, requests: int, allocation: str = ALLOCATION
) -> PeriodState:
    """The ledger once `requests` more requests are settled and nothing is reserved."""

    def done() -> PeriodState | None:
        s = ledger(redis_server, allocation)
        return s if s.requests >= before.requests + requests and s.reserved == 0 else None

    return wait_for(done, 15, f"{requests} requests to be charged")


def _billed(sent: dict[str, Any]) -> tuple[int, int, int]:
    """What the mock billed for a request it received: input (every kind), output, and the cached
    part of the input."""
    bill = sent["billed"]
    return int(bill["input"]), int(bill["output"]), int(bill.get("cached", 0))


def sent(mock: MockUpstreamProcess) -> list[dict[str, Any]]:
    """The metered requests the mock received, in order."""
    return [r for r in mock.requests() if r["method"] == "POST" and r["path"] in METERED]


@dataclass(frozen=True)
class Metered:
    requests: list[dict[str, Any]]  # what the mock received, in order
    counts: list[tuple[int, int]]  # its (input, output) tokens per request
    cached: list[int]  # the cached part of each request's input

    @property
    def cost(self) -> int:
        """What the requests were charged, nano-USD (cached input at its own price)."""
        return sum(PRICE.cost(i - c, o, c) for (i, o), c in zip(self.counts, self.cached, strict=True))

    @property
    def tokens(self) -> int:
        return sum(i + o for i, o in self.counts)


def assert_charged_as_counted(
    mock: MockUpstreamProcess, redis_server: RedisServer, before: PeriodState, allocation: str = ALLOCATION
) -> Metered:
    """Every request the mock received was charged to `allocation`, at exactly the mock's token
    counts."""
    requests = sent(mock)
    assert requests, "the client sent nothing upstream"
    billed = [_billed(r) for r in requests]
    after = charged(redis_server, before, len(billed), allocation)
    assert after.requests - before.requests == len(billed)
    assert (after.tokens - before.tokens, after.spent - before.spent) == (
        sum(i + o for i, o, _ in billed),
        sum(PRICE.cost(i - c, o, c) for i, o, c in billed),  # cached input at its own price
    ), billed
    return Metered(requests, [(i, o) for i, o, _ in billed], [c for _, _, c in billed])


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: nothing of the developer's (no OPENAI_* variables, no real home)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        "NO_COLOR": "1",
    }


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a client to the end; fail with its output if it fails or outlives `timeout`."""
    try:
        result = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{argv[:3]} still running after {timeout}s:\n{e.stdout!r}\n{e.stderr!r}") from e
    assert result.returncode == 0, (
        f"{argv[:3]} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def run_watched(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], PeerWatch]:
    """`run`, in a process group of its own whose TCP connections a `PeerWatch` samples all along."""
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    watch = PeerWatch(proc.pid, interval=0.1)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{argv[:3]} still running after {timeout}s:\n{stdout}\n{stderr}") from None
    finally:
        watch.close()
    assert proc.returncode == 0, (
        f"{argv[:3]} exited {proc.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    )
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), watch


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a program's output lines (CLIs mix in other lines)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


class ProxyTrap:
    """A proxy on loopback that serves nothing and remembers who asked: the clients get it as
    HTTP(S)_PROXY, with NO_PROXY for loopback, so any request they try to make elsewhere shows up
    here (as `CONNECT host:443`) instead of leaving the machine."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def env(self) -> dict[str, str]:
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        return {
            **{n: self.url for n in names},
            **{n.lower(): self.url for n in names},
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(1024).split(b"\r\n", 1)[0]
                except OSError:
                    first = b"?"
                self.asked.append(first.decode(errors="replace"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()


def bash_round_trip(stdout: str, work: Path) -> list[tuple[int, int]]:
    """What OpenCode and its fork Kilo Code print with `--format json` for the mock's bash round
    trip: the tool ran the mock's command in `work`, the answer quotes its output. Returns each
    step's tokens as the tool shows them (uncached input and cache reads together: the prompt)."""
    parts = [e["part"] for e in json_lines(stdout) if "part" in e]
    [bash] = [p for p in parts if p["type"] == "tool"]
    assert bash["tool"] == "bash" and bash["state"]["status"] == "completed", bash
    assert bash["state"]["input"] == {"command": "mock"}
    assert bash["state"]["output"].strip() == f"mock command ran in {work}"
    answer = [p["text"] for p in parts if p["type"] == "text"][-1]
    assert answer.strip() == f"The tool returned: mock command ran in {work}"
    return [
        (p["tokens"]["input"] + p["tokens"]["cache"]["read"], p["tokens"]["output"])
        for p in parts
        if p["type"] == "step-finish"
    ]

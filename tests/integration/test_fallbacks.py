"""One model, several upstreams: a backend answers when the first one fails before any byte
reached the client; one charge, at the price of the one that answered; circuits open and close."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.processes import free_port
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

from aikeys.ledger.store import Allocation, Ledger, PeriodState, UsageRow, connect
from aikeys.money import Price
from aikeys.periods import Period
from tests.integration.kube import (
    another_gateway,
    apply,
    apply_allocation,
    create_key,
    gateway_knows,
    wait_for,
)

pytestmark = pytest.mark.integration
NS = "fb"
CHEAP, DEAR = Price.parse("1.00", "2.00"), Price.parse("3.00", "6.00")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstreamProcess]:
    mock = launch_mock_upstream(tmp_path_factory.mktemp("backup"))
    try:
        yield mock
    finally:
        mock.stop()


def provider(cp: ControlPlane, name: str, url: str, model: dict[str, Any]) -> None:
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {"baseURL": url, "timeout": "10s", "models": [model]},
    }
    apply(cp, json.dumps(body), NS)


@pytest.fixture(scope="module")
def key(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    mock_upstream_process: MockUpstreamProcess,
    backup: MockUpstreamProcess,
) -> str:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    fallback = [{"model": f"{NS}:b/m", "weight": 0}]  # weight 0: only ever a fallback
    cheap = {"inputPricePerMillion": "1.00", "outputPricePerMillion": "2.00"}
    provider(cp, "a", mock_upstream_process.url, {"name": "m", **cheap, "backends": fallback})
    provider(cp, "dead", f"http://127.0.0.1:{free_port()}/v1", {"name": "m", **cheap, "backends": fallback})
    provider(
        cp, "b", backup.url, {"name": "m", "inputPricePerMillion": "3.00", "outputPricePerMillion": "6.00"}
    )
    apply_allocation(cp, NS, "main", "100.00")
    plaintext = create_key(cp, NS, "k", "main")
    gateway_knows(gateway.openai_url, plaintext)
    return plaintext


def state(redis_server: RedisServer) -> tuple[PeriodState, list[UsageRow]]:
    async def read() -> tuple[PeriodState, list[UsageRow]]:
        c = connect(redis_server.url)
        try:
            ledger = Ledger(c)
            a = Allocation(NS, "main", 0, Period.MONTHLY)
            return await ledger.period_state(a), await ledger.usage(a, [ledger.now().strftime("%Y%m%d")])
        finally:
            await c.aclose()

    return asyncio.run(read())


def settled(redis_server: RedisServer, before: PeriodState) -> tuple[PeriodState, list[UsageRow]]:
    def done() -> tuple[PeriodState, list[UsageRow]] | None:
        s, rows = state(redis_server)
        return (s, rows) if s.requests > before.requests and s.reserved == 0 else None

    return wait_for(done, 10, "the charge")


def chat(gw: GatewayProcess, key: str, model: str = f"{NS}:a/m", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.openai_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": HI, "max_tokens": 5, **extra},
        timeout=30,
    )


def test_a_healthy_first_upstream_answers_itself(
    gateway: GatewayProcess, key: str, mock_upstream: MockUpstreamProcess, backup: MockUpstreamProcess
) -> None:
    backup.clear_requests()
    assert chat(gateway, key).status_code == 200
    assert len(mock_upstream.requests()) == 1 and not backup.requests()


def test_a_stream_that_broke_after_its_first_byte_is_not_retried(
    gateway: GatewayProcess,
    key: str,
    mock_upstream: MockUpstreamProcess,
    backup: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    backup.clear_requests()
    mock_upstream.configure(break_after_chunks=2)
    before, _ = state(redis_server)
    with httpx.stream(
        "POST",
        f"{gateway.openai_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": f"{NS}:a/m", "messages": HI, "max_tokens": 5, "stream": True},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        body = resp.read()
    assert b"[DONE]" not in body  # the client saw the break, not a second answer
    after, _ = settled(redis_server, before)
    assert after.requests - before.requests == 1 and not backup.requests()


# after these, the session gateway's circuit for a/m is open (three failures in a row)
@pytest.mark.parametrize("failure", [503, 429, 500])
def test_a_failing_upstream_falls_back_with_one_charge_at_the_backends_price(
    failure: int,
    gateway: GatewayProcess,
    key: str,
    mock_upstream: MockUpstreamProcess,
    backup: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    backup.clear_requests()
    mock_upstream.configure(fail_status=failure, fail_count=1)
    before, _ = state(redis_server)
    reply = chat(gateway, key)
    assert reply.status_code == 200
    usage = reply.json()["usage"]
    after, rows = settled(redis_server, before)
    assert after.requests - before.requests == 1  # one charge
    assert after.spent - before.spent == DEAR.cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert len(mock_upstream.requests()) == 1 and len(backup.requests()) == 1
    assert any(r.model == f"{NS}:b/m" for r in rows)  # usage says which backend answered
    line = next(x for x in reversed(gateway.log().splitlines()) if reply.headers["x-request-id"] in x)
    logged = json.loads(line)
    assert logged["backend"] == f"{NS}:b/m" and logged["fallbacks"] == [f"{NS}:a/m:{failure}"]


def test_a_refused_connection_falls_back(
    gateway: GatewayProcess, key: str, backup: MockUpstreamProcess
) -> None:
    backup.clear_requests()
    reply = chat(gateway, key, model=f"{NS}:dead/m")
    assert reply.status_code == 200 and len(backup.requests()) == 1


def test_a_circuit_opens_and_closes(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    key: str,
    mock_upstream: MockUpstreamProcess,
    backup: MockUpstreamProcess,
    tmp_path: Path,
) -> None:
    env = {"AIKEYS_BREAKER_FAILURES": "2", "AIKEYS_BREAKER_OPEN_SECONDS": "2"}
    with another_gateway(control_plane, redis_server.url, tmp_path, key, **env) as gw:
        mock_upstream.configure(fail_status=503)
        assert [chat(gw, key).status_code for _ in range(2)] == [200, 200]  # B answered both
        assert len(mock_upstream.requests()) == 2
        assert chat(gw, key).status_code == 200
        assert len(mock_upstream.requests()) == 2  # open: A was not even asked
        mock_upstream.configure(fail_status=None)
        time.sleep(2.2)
        backup.clear_requests()
        assert chat(gw, key).status_code == 200  # half open: one trial, and A answered
        assert len(mock_upstream.requests()) == 3 and not backup.requests()
        assert chat(gw, key).status_code == 200
        assert len(mock_upstream.requests()) == 4  # closed again
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert (
            f'aikeys_upstream_fallbacks_total{{failed="{NS}:a/m",next="{NS}:b/m",reason="503"}} 2.0'
            in metrics
        )

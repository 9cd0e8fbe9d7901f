"""A real Prometheus scrapes the gateway; PromQL spend per namespace equals the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.prometheus import PrometheusServer, launch_prometheus
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from aikeys.ledger.store import Allocation, Ledger, connect
from aikeys.money import NANO_PER_USD
from aikeys.periods import Period
from tests.integration.kube import apply_allocation, apply_provider, create_key, gateway_knows, wait_for

pytestmark = pytest.mark.integration
NS = "gw-prom"


@pytest.fixture(scope="module")
def prometheus(
    gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    server = launch_prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{gateway.port}"])
    yield server
    server.stop()


def test_promql_spend_per_namespace_equals_the_ledger(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    redis_server: RedisServer,
    prometheus: PrometheusServer,
    mock_upstream_process: MockUpstreamProcess,
    tmp_path: Path,
) -> None:
    control_plane.kubectl("create", "namespace", NS)
    apply_provider(control_plane, NS, mock_upstream_process.url, {"gpt": ("3.25", "11.7")})
    apply_allocation(control_plane, NS, "metered", "50", "Daily")
    keys = [create_key(control_plane, NS, f"scraped-{i}", "metered") for i in range(2)]
    for key in keys:
        gateway_knows(gateway.openai_url, key)
        c = openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0)
        for n in range(1, 6):
            c.chat.completions.create(
                model=f"{NS}:mock/gpt", messages=[{"role": "user", "content": "x " * n}], max_tokens=n
            )
        list(
            c.chat.completions.create(
                model=f"{NS}:mock/gpt", messages=[{"role": "user", "content": "s"}], stream=True
            )
        )

    async def ledger_spent() -> int | None:
        client = connect(redis_server.url)
        st = await Ledger(client).period_state(Allocation(NS, "metered", 50 * NANO_PER_USD, Period.DAILY))
        await client.aclose()
        return st.spent if st.requests == 12 and st.reserved == 0 else None  # streams settle after they end

    spent = wait_for(lambda: asyncio.run(ledger_spent()), 10, "all 12 requests settled")
    assert spent > 0

    def scraped() -> float | None:
        result = prometheus.query(f'sum by (namespace) (aikeys_cost_usd_total{{namespace="{NS}"}})')
        value = float(result[0]["value"][1]) if result else None
        return value if value is not None and abs(value * NANO_PER_USD - spent) < 1 else None

    value = wait_for(scraped, 15, "Prometheus to scrape the spend", interval=0.5)
    assert round(value * NANO_PER_USD) == spent
    per_key = prometheus.query(f'sum by (key) (aikeys_key_cost_usd_total{{namespace="{NS}"}})')
    assert {r["metric"]["key"] for r in per_key} == {"scraped-0", "scraped-1"}
    requests = prometheus.query(f'sum(aikeys_requests_total{{namespace="{NS}", code="200"}})')
    assert float(requests[0]["value"][1]) == 12
    assert prometheus.query('aikeys_cache_objects{kind="AIKey"}')

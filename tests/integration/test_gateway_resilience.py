"""The gateway when its dependencies fail: Redis, the API server, its own watch history."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer, launch_redis
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from aikeys_gateway.cache.catalog import key_entry
from aikeys_gateway.cache.informers import Informer
from openai.types.chat import ChatCompletionMessageParam

from aikeys.kube import config as kubeconfig
from aikeys.kube.client import KubeClient, path
from aikeys.ledger.store import Allocation, Ledger, connect
from aikeys.periods import Period
from tests.conftest import CREDENTIALS
from tests.integration.kube import apply_allocation, apply_provider, create_key, gateway_knows, wait_for

pytestmark = pytest.mark.integration
NS = "gw-res"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def provider(
    control_plane: ControlPlane, operator: object, mock_upstream_process: MockUpstreamProcess
) -> None:
    control_plane.kubectl("create", "namespace", NS)
    apply_provider(control_plane, NS, mock_upstream_process.url, {"gpt": ("1", "1")})
    apply_allocation(control_plane, NS, "shared", "0.001", "None")
    apply_allocation(control_plane, NS, "roomy", "100", "None")


def test_redis_down_is_503_and_nothing_unmetered(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    provider: None,
    tmp_path: Path,
    mock_upstream: MockUpstreamProcess,
) -> None:
    own_redis = launch_redis(tmp_path / "redis")
    gw = GatewayProcess(control_plane.kubeconfig, own_redis.url, tmp_path / "gw.log", CREDENTIALS).start()
    try:
        key = create_key(control_plane, NS, "redis-probe", "roomy")
        gateway_knows(gw.openai_url, key)
        c = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0)
        assert c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=1).choices
        own_redis.stop()
        mock_upstream.clear_requests()
        with pytest.raises(openai.APIStatusError) as down:
            c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=1)
        assert down.value.status_code == 503
        assert isinstance(down.value.body, dict) and down.value.body["code"] == "service_unavailable"
        assert mock_upstream.requests() == []  # fail-closed: the model was not called
        wait_for(lambda: _not_ready(gw.url), 5, "/readyz to turn false")
        own_redis.start()
        wait_for(lambda: _ready(gw.url), 10, "/readyz to turn true again")
        assert c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=1).choices
    finally:
        gw.stop()
        own_redis.stop()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def _ready(url: str) -> bool:
    return _status(url) == 200


def _not_ready(url: str) -> bool:
    return _status(url) == 503


def test_two_gateways_never_overspend_one_allocation(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    redis_server: RedisServer,
    provider: None,
    tmp_path: Path,
    mock_upstream: MockUpstreamProcess,
) -> None:
    # the budget is measured, not the fail-closed policy: a generous Redis timeout, so that a busy
    # machine never turns an admission into a 503
    patient = {"AIKEYS_REDIS_TIMEOUT": "5"}
    first = GatewayProcess(
        control_plane.kubeconfig, redis_server.url, tmp_path / "gw1.log", CREDENTIALS, extra_env=patient
    ).start()
    second = GatewayProcess(
        control_plane.kubeconfig, redis_server.url, tmp_path / "gw2.log", CREDENTIALS, extra_env=patient
    ).start()
    try:
        key = create_key(control_plane, NS, "racer", "shared")
        for gw in (first, second):
            gateway_knows(gw.openai_url, key)
        # each request reserves ≤ (prompt bound + 100) tokens at 1 USD/M: the 0.001 USD budget fits only a few
        mock_upstream.configure(chunk_delay_ms=0, latency_ms=20)

        def call(gw: GatewayProcess) -> int:
            c = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0)
            try:
                c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=100)
            except openai.APIStatusError as err:
                return err.status_code
            return 200

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(call, [first, second] * 40))
        assert set(codes) <= {200, 402}
        assert codes.count(402) > 0
        assert codes.count(200) > 0

        async def spent() -> tuple[int, int]:
            client = connect(redis_server.url)
            st = await Ledger(client).period_state(Allocation(NS, "shared", 10**6, Period.NONE))
            await client.aclose()
            return st.spent, st.reserved

        def all_settled() -> int | None:
            total, reserved = asyncio.run(spent())
            return total if reserved == 0 else None

        total = wait_for(all_settled, 5, "all settled")
        assert 0 < total <= 10**6  # never more than the 0.001 USD budget
        print(
            f"\n2 gateways x 40 requests: {codes.count(200)} served, {codes.count(402)} refused, "
            f"spent {total} of 1000000 nano-USD"
        )
    finally:
        first.stop()
        second.stop()


def test_apiserver_down_gateway_serves_from_cache(
    control_plane: ControlPlane, gateway: GatewayProcess, provider: None, mock_upstream: MockUpstreamProcess
) -> None:
    key = create_key(control_plane, NS, "cached", "roomy")
    gateway_knows(gateway.openai_url, key)
    c = openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0)
    control_plane.stop_apiserver()
    try:
        for _ in range(5):
            assert c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=1).choices
        assert _ready(gateway.url)  # caches stay valid while the watch reconnects
    finally:
        control_plane.start_apiserver()
    # changes made after it returns reach the gateway
    control_plane.kubectl(
        "patch", "aikey", "cached", "-n", NS, "--type=merge", "-p", '{"spec":{"disabled":true}}'
    )

    def refused() -> bool:
        try:
            c.models.list()
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, 30, "the change made after the apiserver returned")


async def test_informer_relists_on_410_and_drops_objects_deleted_in_the_gap(
    control_plane: ControlPlane, provider: None
) -> None:
    for name in ("gap-a", "gap-b"):
        create_key(control_plane, NS, name, "roomy")
    kube = KubeClient(kubeconfig.from_kubeconfig(control_plane.kubeconfig))
    informer = Informer(kube, "AIKey", path("aikeys.dev/v1alpha1", "aikeys", NS), key_entry, watch_timeout=30)
    await informer.relist()
    assert {(NS, "gap-a"), (NS, "gap-b")} <= set(informer.objects)
    control_plane.kubectl("delete", "aikey", "gap-b", "-n", NS)  # while we are not watching
    informer.resource_version = "1"  # far older than the API server keeps: the watch answers 410 Gone
    task = asyncio.create_task(informer.run())
    try:
        deadline = time.monotonic() + 10
        while informer.relists < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.05)
        assert informer.relists == 2
        assert (NS, "gap-b") not in informer.objects
        assert (NS, "gap-a") in informer.objects
    finally:
        task.cancel()
        await kube.close()


def test_metrics_without_per_key_labels_when_switched_off(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    provider: None,
    tmp_path: Path,
) -> None:
    gw = GatewayProcess(
        control_plane.kubeconfig,
        redis_server.url,
        tmp_path / "gw.log",
        CREDENTIALS,
        extra_env={"AIKEYS_METRICS_PER_KEY": "false"},
    ).start()
    try:
        key = create_key(control_plane, NS, "quiet", "roomy")
        gateway_knows(gw.openai_url, key)
        openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0).chat.completions.create(
            model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=1
        )

        def charged() -> str | None:  # the charge (and its series) lands just after the answer
            text = urllib.request.urlopen(gw.url + "/metrics").read().decode()  # noqa: S310
            return text if "aikeys_cost_usd_total{" in text else None

        text = wait_for(charged, 5, "the request's cost in /metrics")
        assert "aikeys_cost_usd_total{" in text
        assert "aikeys_key_cost_usd_total{" not in text
        assert 'key="quiet"' not in text
    finally:
        gw.stop()

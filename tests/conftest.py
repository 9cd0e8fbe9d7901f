"""Shared fixtures: the real components, started once per test session on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aikeys_dev.devstack import usageapi
from aikeys_dev.devstack.controlplane import ControlPlane, launch
from aikeys_dev.devstack.processes import free_port
from aikeys_dev.devstack.redis import RedisServer, launch_redis
from aikeys_dev.devstack.services import GatewayProcess, OperatorProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

from tests.integration.kube import install_crds

CREDENTIALS = "aikeys-system/aikeys-provider-credentials"
DRAIN_SECONDS = 3.0  # the test gateway reads on a stream whose client left for this long
BODY_TIMEOUT = 3.0  # and waits this long for a request body


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = launch(tmp_path_factory.mktemp("controlplane"))
    print(f"\ncontrol plane up in {cp.startup_seconds:.1f}s")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = launch_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def debuggable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own that accepts DEBUG SLEEP (tests.integration.stalls)."""
    server = launch_redis(tmp_path / "debug", ("--enable-debug-command", "yes"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mock_upstream_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstreamProcess]:
    mock = launch_mock_upstream(tmp_path_factory.mktemp("mock"))
    try:
        yield mock
    finally:
        mock.stop()


MOCK_DEFAULTS: dict[str, object] = {
    "usage": True,
    "reply_tokens": 16,
    "latency_ms": 0.0,
    "chunk_delay_ms": 0.0,
    "fail_status": None,
    "fail_count": None,
    "break_after_chunks": None,
    "reject_stream_options": False,
    "models": [],
    "api_key": None,
    "ignore_max_tokens": False,
    "sse_framing": "standard",
    "json_spacing": False,
    "usage_as_strings": False,
    "reply_kind": "text",
    "usage_prompt_tokens": None,
    "usage_completion_tokens": None,
    "stall_before_usage_ms": 0.0,
    "late_ms": 0.0,
    "reset": False,
    "fault_count": None,
    "prompt_cache": True,
    "cache_min_tokens": 1024,
    "cache_increment": 128,
}


@pytest.fixture
def mock_upstream(mock_upstream_process: MockUpstreamProcess) -> Iterator[MockUpstreamProcess]:
    """The session's mock upstream with default behaviour and an empty request log; whatever a test
    changes is put back afterwards, so tests that use the process directly see the defaults too."""
    mock_upstream_process.configure(**MOCK_DEFAULTS)
    mock_upstream_process.clear_requests()
    yield mock_upstream_process
    mock_upstream_process.configure(**MOCK_DEFAULTS)


@pytest.fixture(scope="session")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    gateway_port: int,
) -> Iterator[OperatorProcess]:
    """The one operator of the test session (two would both mint keys)."""
    install_crds(control_plane)
    control_plane.kubectl("create", "namespace", "aikeys-system", check=False)
    op = OperatorProcess(
        control_plane.kubeconfig,
        redis_server.url,
        tmp_path_factory.mktemp("operator") / "operator.log",
        gateway_url=f"http://127.0.0.1:{gateway_port}/api/openai/v1",
        extra_env={"AIKEYS_CREDENTIALS_SECRET": CREDENTIALS},
    ).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def usage_api(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> usageapi.UsageAPI:
    """The session gateway's usage API (usage.aikeys.dev), registered with the control plane."""
    return usageapi.register(control_plane, tmp_path_factory.mktemp("usage-api"))


@pytest.fixture(scope="session")
def gateway(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
    gateway_port: int,
    usage_api: usageapi.UsageAPI,
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        control_plane.kubeconfig,
        redis_server.url,
        tmp_path_factory.mktemp("gateway") / "gateway.log",
        CREDENTIALS,
        extra_env={
            "AIKEYS_MAX_BODY_BYTES": str(1024 * 1024),
            "AIKEYS_STREAM_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "AIKEYS_BODY_TIMEOUT": str(BODY_TIMEOUT),
            **usage_api.env(),
        },
    )
    gw.start(port=gateway_port)
    try:
        seconds = usageapi.wait_available(control_plane)
        print(f"\nusage API available through the API server in {seconds:.1f}s")
        yield gw
    finally:
        gw.stop()

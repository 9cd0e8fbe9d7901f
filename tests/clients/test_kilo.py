"""Kilo Code CLI (the `kilo` program of `@kilocode/cli`, from its platform package
`@kilocode/cli-linux-x64`) through the gateway: `kilo run --auto` with a custom provider
(@ai-sdk/openai-compatible, which Kilo bundles) on the chat-only model. The mock asks for Kilo's
`bash` tool, Kilo runs the command in a temporary folder and sends its output back as a `tool`
message, then prints the mock's answer. Both requests are charged exactly what the mock counted;
each step's tokens as Kilo reported them are that count.

Kilo is configured entirely by the environment: KILO_CONFIG_CONTENT (`config` below: the Connect
page's kilo.json from aikeys.connect, plus one tool switch) and the switches of `OFFLINE`, which keep
it off every network but loopback (no models.dev catalogue, no Kilo API, no telemetry, no update
check, no sharing, no default plugins); its home is a temporary folder (it keeps a SQLite database
there). Its TCP connections are watched while it runs (tests/clients/sockets.py)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from aikeys import connect
from tests.clients.harness import (
    CHAT_ONLY,
    ProxyTrap,
    Tenant,
    assert_charged_as_counted,
    base_env,
    bash_round_trip,
    exports,
    ledger,
    run_watched,
    target,
)

pytestmark = pytest.mark.integration
TIMEOUT = 240  # ≈ 12 s on an idle machine; a loaded 2-core one has taken 90 s
MOCK_COMMAND = '#!/bin/sh\necho "mock command ran in $(pwd)"\n'


# Kilo offers its tools in alphabetical order and the mock calls the first one: without this it
# would be `background_process`, which the test has no use for.
EXTRA = {"tools": {"background_process": False}}


def config(tenant: Tenant, model: str) -> dict[str, Any]:
    """The Connect page's kilo.json for this key and model (aikeys.connect), plus only `EXTRA`."""
    guide = connect.guide(connect.Tool.KILO_CODE, target(tenant, model))
    shown: dict[str, Any] = json.loads(connect.snippet(guide, "~/.config/kilo/kilo.json"))
    return shown | EXTRA


OFFLINE = {
    "KILO_DISABLE_MODELS_FETCH": "1",  # the models.dev catalogue
    "KILO_TELEMETRY_LEVEL": "off",
    "KILO_DISABLE_AUTOUPDATE": "1",
    "KILO_NO_DAEMON": "1",
    "KILO_DISABLE_SHARE": "1",
    "KILO_DISABLE_SESSION_INGEST": "1",  # sessions are not sent to Kilo's API
    "KILO_DISABLE_DEFAULT_PLUGINS": "1",
    "KILO_PURE": "1",
}


def kilo_binary(node_packages: Path) -> Path:
    """The platform package's program (what the `@kilocode/cli` wrapper would run)."""
    machine = {"x86_64": "x64"}.get(platform.machine(), platform.machine())
    binary = node_packages / "node_modules" / "@kilocode" / f"cli-linux-{machine}" / "bin" / "kilo"
    assert binary.is_file(), f"no Kilo Code program for {platform.machine()} in {node_packages}"
    return binary


def test_kilo_run_with_the_bash_tool(
    node_packages: Path,
    tenant: Tenant,
    proxy_trap: ProxyTrap,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    home, work, tools = tmp_path / "home", tmp_path / "work", tmp_path / "bin"
    for folder in (home, work, tools):
        folder.mkdir(parents=True)
    (tools / "mock").write_text(MOCK_COMMAND)
    (tools / "mock").chmod(0o755)
    kilo = kilo_binary(node_packages)
    env = (
        base_env(home)
        | {
            "KILO_CONFIG_CONTENT": json.dumps(config(tenant, CHAT_ONLY)),
            **exports(connect.key_snippet(target(tenant, CHAT_ONLY))),  # AIKEYS_API_KEY
            "KILO_TREE_SITTER_WASM_DIR": str(kilo.parent / "tree-sitter"),  # as the wrapper sets it
            "PATH": f"{tools}:{base_env(home)['PATH']}",
        }
        | OFFLINE
        | proxy_trap.env()
    )
    before = ledger(redis_server)
    argv = [str(kilo), "run", "--auto", "--format", "json", "Use the tool, please."]
    result, watch = run_watched(argv, env, work, timeout=TIMEOUT)
    # nothing but loopback (see OFFLINE): no request through the proxy, no connection elsewhere
    assert proxy_trap.asked == []
    assert watch.samples > 0 and watch.elsewhere() == []
    steps = bash_round_trip(result.stdout, work)

    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert len(metered.requests) == 2  # the call, then the answer to its output
    assert {r["path"] for r in metered.requests} == {"/v1/chat/completions"}
    first, second = (r["body"] for r in metered.requests)
    for body in (first, second):
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert first["tools"][0]["function"]["name"] == "bash"
    [call] = second["messages"][-2]["tool_calls"]
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["tool_call_id"] == call["id"]
    assert steps == metered.counts
    # the answer resends the call's prompt: billed (and charged) partly as cached input
    assert metered.cached[1] > 0, metered.cached

"""Codex CLI (`@openai/codex` on npm) through the gateway: `codex exec` with a custom model
provider, once on a Responses-native model and once on a chat-only one (the gateway translates),
each completing a tool call — the mock asks for Codex's own `exec_command` tool, Codex runs the
command in its read-only sandbox in a temporary folder, sends the output back, and prints the
mock's final answer. Charged exactly what the mock counted, which is also what Codex reported.

Codex is kept off every network but loopback: no web search tool, no analytics, no plugin
catalogue, no update check, no OpenTelemetry export; its home (CODEX_HOME, HOME) is a temporary
folder. Codex is configured with the Connect page's config.toml (aikeys.connect), to which the
test adds only those offline settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from aikeys import connect
from tests.clients.harness import (
    CHAT_ONLY,
    NATIVE,
    ProxyTrap,
    Tenant,
    assert_charged_as_counted,
    base_env,
    exports,
    json_lines,
    ledger,
    run,
    target,
)

pytestmark = pytest.mark.integration
TIMEOUT = 90

# What the test adds to the Connect page's config.toml (aikeys.connect, the same text the page and
# `kubectl aikeys connect codex` show): top-level settings before it, tables after it.
OFFLINE_TOP = """\
approval_policy = "never"      # exec: never stop to ask
sandbox_mode = "read-only"     # the model's commands may read, never write
web_search = "disabled"        # a hosted tool: only OpenAI serves it
check_for_update_on_startup = false
allow_login_shell = false      # commands run in `bash -c`, not a login shell
"""
OFFLINE_TABLES = """
[analytics]
enabled = false

[otel]
exporter = "none"

[features]
plugins = false                # the plugin catalogue is fetched from the network
{features}"""
# Codex offers its sub-agent tools as one `namespace` tool: on a chat-only model the gateway turns
# them into chat functions (`multi_agent_v1__close_agent`) and the calls back into namespaced ones.
CHAT_ONLY_FEATURES = ""

# The mock calls the first function offered (Codex's `exec_command`) with the instance of its
# schema: {"cmd": "mock"}. So `mock` is a command, on the PATH Codex's commands get; it tells
# where it ran and whether Codex's sandbox let it write there.
MOCK_COMMAND = """#!/bin/sh
if touch written 2>/dev/null; then mode=writable; else mode=read-only; fi
echo "mock command ran in $(pwd), $mode"
"""


@pytest.mark.parametrize(
    ("model", "upstream_path", "features"),
    [
        pytest.param(NATIVE, "/v1/responses", "", id="native"),
        pytest.param(CHAT_ONLY, "/v1/chat/completions", CHAT_ONLY_FEATURES, id="chat-only"),
    ],
)
def test_codex_exec_runs_a_tool_call(
    model: str,
    upstream_path: str,
    features: str,
    node_packages: Path,
    tenant: Tenant,
    proxy_trap: ProxyTrap,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    home, work, tools = tmp_path / "home", tmp_path / "work", tmp_path / "bin"
    for folder in (home / "codex", work, tools):
        folder.mkdir(parents=True)
    codex_guide = connect.guide(connect.Tool.CODEX, target(tenant, model))
    shown = connect.snippet(codex_guide, "~/.codex/config.toml")
    settings = OFFLINE_TOP + shown + OFFLINE_TABLES.format(features=features)
    (home / "codex" / "config.toml").write_text(settings)
    (tools / "mock").write_text(MOCK_COMMAND)
    (tools / "mock").chmod(0o755)
    env = base_env(home) | {
        "CODEX_HOME": str(home / "codex"),
        **exports(connect.key_snippet(target(tenant, model))),  # AIKEYS_API_KEY, as the page says
        "PATH": f"{tools}:{base_env(home)['PATH']}",
        **proxy_trap.env(),
    }
    codex = str(node_packages / "node_modules" / ".bin" / "codex")
    before = ledger(redis_server)
    result = run(
        [codex, "exec", "--strict-config", "--skip-git-repo-check", "--json", "Use the tool, please."],
        env,
        work,
        timeout=TIMEOUT,
    )
    assert proxy_trap.asked == []  # nothing but loopback: see OFFLINE_TOP and OFFLINE_TABLES
    events = json_lines(result.stdout)
    items = [e["item"] for e in events if e.get("type") == "item.completed"]
    [command] = [i for i in items if i["type"] == "command_execution"]
    assert command["exit_code"] == 0, command
    ran = f"mock command ran in {work}, read-only"  # in the sandbox
    assert command["aggregated_output"].strip() == ran
    assert not (work / "written").exists()
    answer = [i["text"] for i in items if i["type"] == "agent_message"][-1]
    assert answer.startswith("The tool returned: ") and ran in answer
    [done] = [e for e in events if e.get("type") == "turn.completed"]

    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert len(metered.requests) == 2  # the call, then the answer to its output
    assert {r["path"] for r in metered.requests} == {upstream_path}
    assert all(r["body"]["stream"] is True for r in metered.requests)
    # Codex adds up the usage of the turn's requests: the same sums as the mock's counts
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (
        sum(i for i, _ in metered.counts),
        sum(o for _, o in metered.counts),
    )
    # the second request resends the first's prompt: the mock (as OpenAI) bills that prefix as
    # cached input, and the gateway charged it at the cached price (assert_charged_as_counted)
    assert metered.cached[0] == 0 and metered.cached[1] > 0, metered.cached
    first = metered.requests[0]["body"]["tools"][0]  # in either API's shape
    assert (first.get("function") or first)["name"] == "exec_command"

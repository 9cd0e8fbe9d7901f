"""OpenCode (the `opencode` binary of the `opencode-ai` npm release) through the gateway:
`opencode run` with a custom provider (@ai-sdk/openai-compatible, which OpenCode bundles) on the
chat-only model. The mock asks for OpenCode's `bash` tool, OpenCode runs the command in a temporary
folder and sends the output back, then prints the mock's answer. OpenCode also asks the model for
a session title. Every request is charged exactly what the mock counted; each step's tokens as
OpenCode reported them are that count.

Kept offline but for loopback: no models.dev catalogue, no update check, no default plugins, no
LSP downloads, no sharing; OpenCode's start-up install of `@opencode-ai/plugin` into its config
folder finds npm offline and is skipped with a warning. Its home and XDG folders are temporary.
OpenCode is configured with the Connect page's opencode.json (aikeys.connect), to which the test
adds only `EXTRA`."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

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
    run,
    target,
)

pytestmark = pytest.mark.integration
TIMEOUT = 120


# What the test adds to the Connect page's opencode.json (aikeys.connect): the title model, no
# update check or sharing, and the tools' permissions.
EXTRA = {
    "small_model": f"aikeys/{CHAT_ONLY}",
    "autoupdate": False,
    "share": "disabled",
    "permission": {"bash": "allow", "edit": "deny", "webfetch": "deny"},
}


OFFLINE = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",  # the models.dev catalogue
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",  # reads nothing of ~/.claude
    "npm_config_offline": "true",  # the config folder's @opencode-ai/plugin install: skipped
}
MOCK_COMMAND = '#!/bin/sh\necho "mock command ran in $(pwd)"\n'


def opencode_binary(node_packages: Path) -> Path:
    """The platform package's binary (what the `opencode-ai` wrapper's postinstall would pick)."""
    machine = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "?")
    for package in (f"opencode-linux-{machine}", f"opencode-linux-{machine}-baseline"):
        binary = node_packages / "node_modules" / package / "bin" / "opencode"
        if not binary.is_file():
            continue
        if subprocess.run([binary, "--version"], capture_output=True, check=False).returncode == 0:
            return binary
    raise AssertionError(f"no working OpenCode binary for {platform.machine()} in {node_packages}")


def test_opencode_run_with_a_tool_call(
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
    shown = connect.snippet(connect.guide(connect.Tool.OPENCODE, target(tenant, CHAT_ONLY)), "opencode.json")
    (home / "opencode.json").write_text(json.dumps(json.loads(shown) | EXTRA, indent=2))
    (tools / "mock").write_text(MOCK_COMMAND)
    (tools / "mock").chmod(0o755)
    env = (
        base_env(home)
        | {
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "OPENCODE_CONFIG": str(home / "opencode.json"),
            **exports(connect.key_snippet(target(tenant, CHAT_ONLY))),  # AIKEYS_API_KEY
            "PATH": f"{tools}:{base_env(home)['PATH']}",
        }
        | OFFLINE
        | proxy_trap.env()
    )
    before = ledger(redis_server)
    result = run(
        [str(opencode_binary(node_packages)), "run", "--format", "json", "Use the tool, please."],
        env,
        work,
        timeout=TIMEOUT,
    )
    assert proxy_trap.asked == []
    steps = bash_round_trip(result.stdout, work)

    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert {r["path"] for r in metered.requests} == {"/v1/chat/completions"}
    # the agent's two steps (the tool call, the answer) and the session title, in some order
    agent = [c for r, c in zip(metered.requests, metered.counts, strict=True) if r["body"].get("tools")]
    assert steps == agent and len(agent) == 2
    assert len(metered.requests) == 3
    # the answer step resends the tool call's prompt: billed (and charged) partly as cached input
    cached = [c for r, c in zip(metered.requests, metered.cached, strict=True) if r["body"].get("tools")]
    assert cached[0] == 0 and cached[1] > 0, cached

"""`aikeys-dev`: the local dev stack (`up`, `down`, `status`: what `make dev` runs) and the mock
OpenAI upstream (`mock-upstream`).

A command of its own, not a part of the user's `aikeys` / `kubectl aikeys`: it comes with the
aikeys-dev distribution (dev/pyproject.toml), which only a checkout installs (`make venv`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import ModuleType

import click


def _stack() -> ModuleType:
    """The dev stack, imported only when used: `mock-upstream` starts without it."""
    from aikeys_dev.devstack import stack

    return stack


def _print_summary(env: dict[str, str]) -> None:
    stack = _stack()
    click.echo("\naikeys dev stack is up.\n")
    labels = {
        "KUBECONFIG": "kubeconfig",
        "AIKEYS_GATEWAY_URL": "gateway (OpenAI base URL)",
        "AIKEYS_MOCK_UPSTREAM_URL": "mock upstream",
        "AIKEYS_REDIS_URL": "redis",
        "AIKEYS_DEMO_KEY": "demo key",
        "AIKEYS_UI_URL": "web pages (AI Keys, AI Usage)",
    }
    for key, label in labels.items():
        if key in env:
            click.echo(f"  {label:<27} {env[key]}")
    click.echo(f"\nIn your shell:  . {os.path.relpath(stack.ENV_FILE)}")
    click.echo(
        "Then e.g.:      kubectl get --raw /version   (.dev/env puts the pinned kubectl and helm on PATH)"
    )
    if "AIKEYS_GATEWAY_URL" in env:
        click.echo("                kubectl get ai -A")
        click.echo("                kubectl get keyusages -A      (usage per key, through the API server)")
        click.echo(
            '                curl -s "$AIKEYS_GATEWAY_URL/chat/completions" -H "Authorization: Bearer '
            '$AIKEYS_DEMO_KEY" \\'
        )
        click.echo(
            '                  -H \'Content-Type: application/json\' -d \'{"model": "demo:mock/gpt-4o-mini", '
            '"messages": [{"role": "user", "content": "Hello"}]}\''
        )
        if "AIKEYS_UI_URL" in env:
            click.echo(
                "\nWeb pages:      open $AIKEYS_UI_URL and sign in with a token: "
                "kubectl -n demo create token demo-user"
            )
            click.echo("                (or with the demo key: that key's own usage only)")
        click.echo("\nPython (OPENAI_BASE_URL and OPENAI_API_KEY are in .dev/env):")
        click.echo("                from openai import OpenAI")
        click.echo('                reply = OpenAI().chat.completions.create(model="demo:mock/gpt-4o-mini",')
        click.echo('                    messages=[{"role": "user", "content": "Hello"}])')
        click.echo("                print(reply.choices[0].message.content)")
    click.echo("Stop it with:   make dev-down\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """aikeys' developer tools: the local dev stack and the mock OpenAI upstream.

    `aikeys-dev up` starts the stack in the background (what `make dev` runs), `aikeys-dev down`
    stops it; `aikeys-dev mock-upstream` serves the mock model server in the foreground.
    """


@cli.command()
@click.option(
    "--timeout",
    default=1800.0,
    show_default=True,
    help="Seconds to wait for the stack (the first run builds the control plane).",
)
def up(timeout: float) -> None:
    """Start the dev stack in the background and print how to use it."""
    stack = _stack()
    if stack.running_pid() and stack.ENV_FILE.exists():
        click.echo("aikeys dev stack is already running.")
        _print_summary(stack.read_env())
        return
    stack.STATE_DIR.mkdir(parents=True, exist_ok=True)
    stack.ENV_FILE.unlink(missing_ok=True)
    log = stack.LOG_FILE.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aikeys_dev.devstack.stack"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    click.echo(f"starting aikeys dev stack (pid {proc.pid}, log {stack.LOG_FILE}) ...")
    shown = 0
    deadline = time.monotonic() + timeout
    while not stack.ENV_FILE.exists():
        lines = stack.LOG_FILE.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            click.echo(f"  {line}")
        shown = len(lines)
        if proc.poll() is not None:
            raise click.ClickException(f"the dev stack exited ({proc.returncode}); see {stack.LOG_FILE}")
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGTERM)
            raise click.ClickException(f"the dev stack was not up after {timeout:.0f}s; see {stack.LOG_FILE}")
        time.sleep(0.2)
    for line in stack.LOG_FILE.read_text(errors="replace").splitlines()[shown:]:
        click.echo(f"  {line}")
    _print_summary(stack.read_env())


@cli.command()
def down() -> None:
    """Stop the stack started by `aikeys-dev up`."""
    stack = _stack()
    pid = stack.running_pid()
    if pid is None:
        click.echo("aikeys dev stack is not running.")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        if stack.running_pid() is None:
            click.echo("aikeys dev stack stopped.")
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    click.echo("aikeys dev stack killed (it did not stop within 30s).")


@cli.command()
def status() -> None:
    """Say whether the stack runs, and its endpoints."""
    stack = _stack()
    if stack.running_pid() and stack.ENV_FILE.exists():
        _print_summary(stack.read_env())
    else:
        click.echo("aikeys dev stack is not running (start it with `make dev`).")
        sys.exit(1)


@cli.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="TCP port to listen on.")
@click.option("--api-key", default=None, help="Require this bearer / api-key value (default: accept any).")
@click.option("--no-usage", is_flag=True, help="Omit `usage` from responses and streams.")
@click.option("--reply-tokens", default=16, show_default=True, help="Reply length when max_tokens is larger.")
@click.option("--latency-ms", default=0.0, show_default=True, help="Delay before each response.")
@click.option("--chunk-delay-ms", default=0.0, show_default=True, help="Delay between stream chunks.")
@click.option("--model", "models", multiple=True, help="Known model (repeatable; default: accept any).")
def mock_upstream(
    host: str,
    port: int,
    api_key: str | None,
    no_usage: bool,
    reply_tokens: int,
    latency_ms: float,
    chunk_delay_ms: float,
    models: tuple[str, ...],
) -> None:
    """Serve a deterministic OpenAI-compatible mock model server.

    Speaks /v1/chat/completions (with SSE streaming), /v1/completions, /v1/embeddings and
    /v1/models, plus Azure's /openai/deployments/NAME/... paths. Change its behaviour while it
    runs with `PUT /_mock/config` (JSON), read what it received with `GET /_mock/requests`.
    """
    from aikeys_dev.mockupstream.behaviour import Behaviour
    from aikeys_dev.mockupstream.server import serve

    behaviour = Behaviour(
        usage=not no_usage,
        reply_tokens=reply_tokens,
        latency_ms=latency_ms,
        chunk_delay_ms=chunk_delay_ms,
        models=list(models),
        api_key=api_key,
    )
    click.echo(f"aikeys mock upstream on http://{host}:{port}/v1", err=True)
    serve(host, port, behaviour)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

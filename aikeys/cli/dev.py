"""`aikeys dev up|down|status`: the local dev stack (what `make dev` runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import ModuleType

import click

DEV_EXTRA_HINT = (
    "the dev stack needs aikeys' dev extra: pip install 'aikeys[dev]' "
    "(in a checkout of the repository: make setup, or pip install -e '.[dev]')"
)


def _stack() -> ModuleType:
    """The dev stack, imported only when used: its dependencies come with the `dev` extra."""
    try:
        from aikeys.devstack import stack
    except ModuleNotFoundError as err:
        raise click.ClickException(f"{DEV_EXTRA_HINT}; missing: {err.name}") from err
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


@click.group()
def dev() -> None:
    """Run the local dev stack (control plane, Redis, mock upstream, ...)."""


@dev.command()
@click.option(
    "--timeout",
    default=1800.0,
    show_default=True,
    help="Seconds to wait for the stack (the first run builds the control plane).",
)
def up(timeout: float) -> None:
    """Start the stack in the background and print how to use it."""
    stack = _stack()
    if stack.running_pid() and stack.ENV_FILE.exists():
        click.echo("aikeys dev stack is already running.")
        _print_summary(stack.read_env())
        return
    stack.STATE_DIR.mkdir(parents=True, exist_ok=True)
    stack.ENV_FILE.unlink(missing_ok=True)
    log = stack.LOG_FILE.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aikeys.devstack.stack"],
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


@dev.command()
def down() -> None:
    """Stop the stack started by `dev up`."""
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


@dev.command()
def status() -> None:
    """Say whether the stack runs, and its endpoints."""
    stack = _stack()
    if stack.running_pid() and stack.ENV_FILE.exists():
        _print_summary(stack.read_env())
    else:
        click.echo("aikeys dev stack is not running (start it with `make dev`).")
        sys.exit(1)

"""Entry point of the `aikeys` / `kubectl aikeys` command line."""

from __future__ import annotations

from pathlib import Path

import click

from aikeys import __version__
from aikeys.cli.connect import connect_command
from aikeys.cli.context import Context
from aikeys.cli.dev import dev
from aikeys.cli.keys import keys
from aikeys.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path),
    help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).",
)
@click.option("--context", "kube_context", help="Kubeconfig context to use.")
@click.option("-n", "--namespace", help="Namespace (default: the context's).")
@click.version_option(__version__, prog_name="aikeys")
@click.pass_context
def cli(ctx: click.Context, kubeconfig: Path | None, kube_context: str | None, namespace: str | None) -> None:
    """aikeys: AI keys with budgets that hold, native to Kubernetes.

    Also runs as a kubectl plugin: `kubectl aikeys keys list`. Run `aikeys COMMAND --help` for
    the options of each command.
    """
    ctx.obj = Context(kubeconfig, kube_context, namespace)


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
    from aikeys.mockupstream.server import Behaviour, serve

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


cli.add_command(keys)
cli.add_command(connect_command)
cli.add_command(usage)
cli.add_command(dev)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

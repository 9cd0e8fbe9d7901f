"""Entry point of the `aikeys` / `kubectl aikeys` command line."""

from __future__ import annotations

from pathlib import Path

import click

from aikeys import __version__
from aikeys.cli.connect import connect_command
from aikeys.cli.context import Context
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


cli.add_command(keys)
cli.add_command(connect_command)
cli.add_command(usage)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

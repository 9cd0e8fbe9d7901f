"""`aikeys-operator`: run the operator (kopf) against the cluster in the kubeconfig or in-cluster."""

from __future__ import annotations

import click
import kopf

from aikeys import __version__
from aikeys.settings import SettingsError, describe
from aikeys_operator.config import Settings

HELP = "\n\n".join(
    [
        "Mint and rotate AI keys, keep Allocation and AIProvider status current.",
        "Configuration comes from the environment (docs/configuration.md); a value that does not parse "
        "stops the start with a message naming the variable. Kubernetes credentials: the in-cluster "
        "service account, else KUBECONFIG.",
        describe("Settings", Settings.VARIABLES),
    ]
)


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable). Default: the whole cluster.",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint to serve ('' to disable).",
)
@click.option(
    "--peering/--standalone",
    default=False,
    show_default=True,
    help="Coordinate the AIProvider handlers with other replicas through kopf peering (needs the "
    "peering CRDs); by default run as the single active replica. AIKeys and Allocations are not kopf "
    "handlers: for them, AIKEYS_LEADER_ELECTION=true elects one replica with a Lease.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "plain", "full"]),
    default="json",
    show_default=True,
    help="Log format (json: one structured object a line).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(__version__, prog_name="aikeys-operator")
def main(namespaces: tuple[str, ...], liveness: str, peering: bool, log_format: str, verbose: bool) -> None:
    try:
        from aikeys_operator import handlers  # registers the handlers (and reads the settings)
    except SettingsError as err:
        raise click.ClickException(str(err)) from err
    handlers.NAMESPACES = namespaces

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat[log_format.upper()])
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=not peering,
        liveness_endpoint=liveness or None,
    )


if __name__ == "__main__":
    main()

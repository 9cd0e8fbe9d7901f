"""`aikeys-gateway`: serve the OpenAI-compatible API (uvicorn).

Every setting is read and checked here, before uvicorn starts: a bad or missing one ends the
command with one line naming the variable and exit code 2 (as for a bad option). uvicorn's factory
(`create_app`, run again in every worker process) reads the same environment and cannot fail on it.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import uvicorn

from aikeys import __version__
from aikeys.settings import SettingsError, describe
from aikeys_gateway.config import Config
from aikeys_gateway.serving import GatewayHttpProtocol

SETTINGS_ERROR = 2  # a usage error, as click's own for a bad option

HELP = "\n\n".join(
    [
        "Serve /api/openai/v1 (chat/completions, completions, embeddings, responses, models) for AI keys.",
        "Configuration comes from the environment (docs/configuration.md); a value that does not parse "
        "stops the start with a message naming the variable. Kubernetes credentials: the in-cluster "
        "service account, else KUBECONFIG. The OpenTelemetry SDK reads its own OTEL_* variables too "
        "(sampler, batching, headers, resource).",
        *(describe(title, variables) for title, variables in Config.SECTIONS),
    ]
)


def create_app() -> Any:
    """uvicorn's factory: the gateway app (main() has checked the settings already)."""
    from aikeys_gateway import app
    from aikeys_gateway.observe.logs import skip_record_lookups

    skip_record_lookups()
    return app.create_app(Config.from_env())


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")  # noqa: S104
@click.option(
    "--port", default=8080, show_default=True, help="Port of the API, /healthz, /readyz and /metrics."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    help="Worker processes (prefer more replicas; metrics are per process).",
)
@click.version_option(__version__, prog_name="aikeys-gateway")
def main(host: str, port: int, workers: int) -> None:
    try:
        config = Config.from_env()
    except SettingsError as err:
        click.echo(f"aikeys-gateway: {err}", err=True)
        sys.exit(SETTINGS_ERROR)
    uvicorn.run(
        "aikeys_gateway.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=GatewayHttpProtocol,  # httptools; one write per answer, bounded heads (serving.py)
        timeout_keep_alive=config.server.idle_timeout,  # also before a connection's first request
        access_log=False,
        proxy_headers=False,  # nothing here reads the client's address; the web pages read X-Forwarded-*
        log_level="warning",
        timeout_graceful_shutdown=config.server.graceful_seconds,
    )


if __name__ == "__main__":
    main()

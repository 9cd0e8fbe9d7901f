"""`aikeys-gateway`: serve the OpenAI-compatible API (uvicorn)."""

from __future__ import annotations

from typing import Any

import click
import uvicorn

from aikeys import __version__
from aikeys.settings import SettingsError
from aikeys_gateway.config import ServerSettings
from aikeys_gateway.serving import GatewayHttpProtocol


def create_app() -> Any:
    """The gateway app, with the usage API's listener beside it when AIKEYS_USAGE_API_PORT is set."""
    from aikeys_gateway import app
    from aikeys_gateway.observe.logs import skip_record_lookups
    from aikeys_gateway.usage import aggregated

    skip_record_lookups()
    settings = aggregated.Settings.from_env()
    gateway = app.create_app()
    return aggregated.WithUsageAPI(gateway, settings) if settings.port else gateway


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
    """Serve /api/openai/v1 (chat/completions, completions, embeddings, models) for AI keys.

    Configuration comes from the environment: AIKEYS_REDIS_URL (required), AIKEYS_FAIL_OPEN
    (default false: answer 503 when Redis is down), AIKEYS_CREDENTIALS_SECRET
    ("namespace/name" of the projected provider credentials), AIKEYS_MAX_BODY_BYTES,
    AIKEYS_METRICS_PER_KEY, AIKEYS_LEASE_SECONDS, AIKEYS_REDIS_TIMEOUT, AIKEYS_WATCH_TIMEOUT,
    AIKEYS_ACCESS_LOG, AIKEYS_OTLP_ENDPOINT (an OTLP/HTTP collector for traces; default none:
    off). Kubernetes credentials: in-cluster service account, else KUBECONFIG.

    Clients and shutdown: AIKEYS_MAX_HEADER_BYTES (65536), AIKEYS_MAX_HEADERS (100),
    AIKEYS_HEADER_TIMEOUT (10 s), AIKEYS_IDLE_TIMEOUT (5 s), AIKEYS_BODY_TIMEOUT (60 s),
    AIKEYS_GRACEFUL_SECONDS (30: on SIGTERM, for requests in flight) and
    AIKEYS_STREAM_DRAIN_SECONDS (60: then, for the usage of streams cut short).

    The usage API for the Kubernetes API server (APIService v1alpha1.usage.aikeys.dev, `kubectl
    get keyusages`): AIKEYS_USAGE_API_PORT (default 0: off), AIKEYS_USAGE_API_CERT and
    AIKEYS_USAGE_API_KEY (serving certificate and key), AIKEYS_USAGE_API_HOST.

    The web pages (/ui: AI Keys, AI Usage): AIKEYS_UI=true (default off), AIKEYS_UI_SESSION_KEY
    (32+ random characters, the same on every replica), AIKEYS_UI_SECURE_COOKIES (auto, always or
    never), AIKEYS_UI_SESSION_HOURS (default 8).
    """
    from aikeys_gateway import ui
    from aikeys_gateway.usage import aggregated

    try:
        aggregated.Settings.from_env()  # a bad value stops here, with the variable's name
        ui.Settings.from_env()
        server = ServerSettings.from_env()
    except SettingsError as err:
        raise click.ClickException(str(err)) from err
    uvicorn.run(
        "aikeys_gateway.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=GatewayHttpProtocol,  # httptools; one write per answer, bounded heads (serving.py)
        timeout_keep_alive=server.idle_timeout,  # also before a connection's first request (serving.py)
        access_log=False,
        proxy_headers=False,  # nothing here reads the client's address; the web pages read X-Forwarded-*
        log_level="warning",
        timeout_graceful_shutdown=server.graceful_seconds,
    )


if __name__ == "__main__":
    main()

"""What every `aikeys` command shares: the cluster connection, the namespace, errors that say what to do."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from aikeys.kube import config as kube_config
from aikeys.kube.client import ApiError, KubeClient, resource_path

T = TypeVar("T")


@dataclass
class Context:
    kubeconfig: Path | None
    context: str | None
    namespace: str | None
    _config: kube_config.KubeConfig | None = None

    def config(self) -> kube_config.KubeConfig:
        """The cluster and credentials, found as kubectl finds them (read once per command)."""
        if self._config is not None:
            return self._config
        try:
            self._config = kube_config.load(self.kubeconfig, self.context)
            return self._config
        except kube_config.ConfigError as err:
            raise click.ClickException(
                f"{err}\nPoint KUBECONFIG (or --kubeconfig) at your cluster's kubeconfig, "
                "or run `make dev` and `. .dev/env` for the local stack."
            ) from err

    def ns(self) -> str:
        return self.namespace or self.config().namespace

    def run(self, coro_fn: Any) -> Any:
        """Run `coro_fn(client)` with a client for the cluster, translating API errors."""

        async def go() -> Any:
            async with KubeClient(self.config(), user_agent="kubectl-aikeys") as client:
                return await coro_fn(client)

        return run(go())


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ApiError as err:
        raise click.ClickException(explain(err)) from err
    except kube_config.ConfigError as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:
        raise click.ClickException(f"cannot reach the cluster: {err}. Is the API server up?") from err


_TEMPLATES = {
    404: "not found: {m}",
    403: "not allowed: {m}\nAsk a cluster admin for a Role that grants this on aikeys.dev resources in the "
    "namespace (e.g. `kubectl create rolebinding ... --clusterrole=...`).",
    401: "the cluster did not accept your credentials: log in again (your token may have expired)",
    422: "the cluster refused the object: {m}",
    409: "already exists: {m}",
}


def explain(err: ApiError) -> str:
    """An API error as a sentence that says what to do."""
    if (
        err.status == 404 and err.reason != "NotFound"
    ):  # no Status object: the resource type itself is unknown
        return (
            "the aikeys CRDs are not installed in this cluster: install them with "
            "`helm install aikeys charts/aikeys` (or `kubectl apply -f crds/`)"
        )
    return _TEMPLATES.get(err.status, f"{err.status} {err.reason}: {{m}}").format(m=err.message)


def aikeys_path(namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    return resource_path("aikeys", namespace, name, sub)

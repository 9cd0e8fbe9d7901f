"""Where the API server is and how to authenticate, found the way kubectl finds them.

The loading is kubernetes_asyncio's: a kubeconfig made of every file in $KUBECONFIG (or
`--kubeconfig`), its contexts, clusters (`certificate-authority[-data]`, `insecure-skip-tls-verify`,
`tls-server-name`, `proxy-url`) and users (`token`, `tokenFile`, client certificates, `exec` plugins,
the `oidc` auth-provider with its refresh), or the in-cluster service account. `KubeConfig` keeps
what our own client (`aikeys.kube.client`) needs and hands it the `Authorization` header on every
request: credentials that expire are renewed here (an exec plugin's at its `expirationTimestamp`,
token files every minute, as client-go does), and a 401 renews once more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REREAD_SECONDS = 60.0  # token files (kubeconfig tokenFile, projected tokens) are read again after this

Renewer = Callable[[bool], Awaitable[str | None]]


class ConfigError(RuntimeError):
    """No usable Kubernetes configuration; the message says what to do."""


@dataclass
class KubeConfig:
    """One API server and one identity. `await authorization()` gives the header for a request."""

    server: str
    namespace: str = "default"
    token: str | None = None  # a static bearer token
    token_file: Path | None = None  # re-read every REREAD_SECONDS: projected tokens rotate
    ca_file: Path | None = None
    insecure: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    context: str | None = None
    tls_server_name: str | None = None
    proxy: str | None = None
    source: str = ""  # where it came from, for messages: a kubeconfig path or "in-cluster"
    renewer: Renewer | None = field(default=None, repr=False)  # exec plugins and auth-providers
    _file_token: tuple[float, str] | None = field(default=None, repr=False)

    @property
    def renewable(self) -> bool:
        """Whether asking again may give another credential (worth a retry after a 401)."""
        return self.renewer is not None or self.token_file is not None

    async def authorization(self, *, renew: bool = False) -> str | None:
        """The `Authorization` header value (`Bearer …`, `Basic …`), or None for certificate users.

        `renew=True` after a 401: run the exec plugin again, refresh the id-token, re-read the file.
        """
        if self.renewer is not None:
            return await self.renewer(renew)
        if self.token_file is not None:
            now = time.monotonic()
            if renew or self._file_token is None or now - self._file_token[0] > REREAD_SECONDS:
                try:
                    token = self.token_file.read_text().strip()
                except OSError as err:
                    raise ConfigError(f"cannot read the token file {self.token_file}: {err}") from err
                self._file_token = (now, token)
            return f"Bearer {self._file_token[1]}"
        return f"Bearer {self.token}" if self.token else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """For aiohttp: False for plain http, else a context with the cluster's CA and our client
        certificate. Call after `authorization()`: an exec plugin may hand out the certificate."""
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


class _LoaderAuth:
    """Exec plugins and auth-providers, run by kubernetes_asyncio's loader. A credential is kept
    until it expires (the plugin's `expirationTimestamp`) or the API server refuses it; the oidc
    provider checks its id-token's expiry itself, token files are read again every minute."""

    def __init__(self, loader: KubeConfigLoader, config: KubeConfig, user: dict[str, Any]):
        self.loader = loader
        self.config = config
        self.periodic = "auth-provider" in user or "tokenFile" in user
        self.header: str | None = None
        self.loaded_at = 0.0
        self.lock: asyncio.Lock | None = None

    def _stale(self) -> bool:
        expiry = getattr(self.loader, "exec_plugin_expiry", None)
        if isinstance(expiry, dt.datetime):
            now = dt.datetime.now(expiry.tzinfo or dt.UTC)
            return expiry.replace(tzinfo=expiry.tzinfo or dt.UTC) <= now + dt.timedelta(seconds=10)
        return self.periodic and time.monotonic() - self.loaded_at > REREAD_SECONDS

    async def __call__(self, renew: bool) -> str | None:
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:  # one plugin run at a time, however many requests wait for it
            if self.loaded_at and not renew and not self._stale():
                return self.header
            if renew and hasattr(self.loader, "exec_plugin_expiry"):
                del self.loader.exec_plugin_expiry
            configuration = Configuration()
            try:
                await self.loader.load_and_set(configuration)
            except (ConfigException, ValueError, OSError) as err:
                raise ConfigError(f"{self.config.source}: could not get credentials: {err}") from err
            self.header = (configuration.api_key.get("BearerToken") or "").strip() or None  # files end in \n
            self.loaded_at = time.monotonic()
            if configuration.cert_file and configuration.key_file:  # an exec plugin's certificate
                self.config.cert_file = Path(configuration.cert_file)
                self.config.key_file = Path(configuration.key_file)
            return self.header


def kubeconfig_paths(explicit: Path | None = None) -> list[Path]:
    """`--kubeconfig`, else every file in $KUBECONFIG, else ~/.kube/config (as kubectl)."""
    if explicit is not None:
        return [explicit.expanduser()]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _current_context(files: list[Path]) -> str | None:
    """kubectl's rule: the first file that sets current-context wins."""
    for f in files:
        doc = yaml.safe_load(f.read_text()) or {}
        if doc.get("current-context"):
            return str(doc["current-context"])
    return None


def from_kubeconfig(path: Path | None = None, context: str | None = None) -> KubeConfig:
    """The kubeconfig's context (`context`, else its current-context) as a KubeConfig.

    Nothing is run yet: an exec plugin runs on the first `authorization()`.
    """
    candidates = kubeconfig_paths(path)
    files = [p for p in candidates if p.is_file() and (yaml.safe_load(p.read_text()) or {})]
    where = os.pathsep.join(str(p) for p in candidates)
    if not files:
        raise ConfigError(f"no kubeconfig at {where}: set KUBECONFIG or run inside a cluster")
    context = context or _current_context(files)
    if not context:
        raise ConfigError(f"{where}: no current-context; pass --context or run `kubectl config use-context`")
    merged = KubeConfigMerger(os.pathsep.join(str(f) for f in files)).config
    if merged is None:
        raise ConfigError(f"no kubeconfig at {where}: set KUBECONFIG or run inside a cluster")
    try:
        loader = KubeConfigLoader(config_dict=merged, active_context=context, config_base_path=None)
        loader._load_cluster_info()  # the loader's own reading of the cluster (and certificate) fields
    except (ConfigException, AssertionError, KeyError, TypeError) as err:
        raise ConfigError(f"{where}: context {context!r} is incomplete or missing: {err}") from err
    ctx = (loader.current_context or {}).get("context") or {}
    found = merged["users"].get_with_name(ctx["user"], safe=True) if ctx.get("user") else None
    user: dict[str, Any] = dict(found.value.get("user") or {}) if found is not None else {}
    attrs = loader.__dict__
    config = KubeConfig(
        server=str(attrs.get("host", "")).rstrip("/"),
        namespace=ctx.get("namespace") or "default",
        ca_file=Path(attrs["ssl_ca_cert"]) if attrs.get("ssl_ca_cert") else None,
        insecure=not attrs.get("verify_ssl", True),
        cert_file=Path(attrs["cert_file"]) if attrs.get("cert_file") else None,
        key_file=Path(attrs["key_file"]) if attrs.get("key_file") else None,
        context=context,
        tls_server_name=attrs.get("tls_server_name"),
        proxy=attrs.get("proxy"),
        source=where,
    )
    if not config.server:
        raise ConfigError(f"{where}: the cluster of context {context!r} has no server")
    if user.get("token") and not ({"exec", "auth-provider"} & user.keys()):
        config.token = str(user["token"])
    elif {"exec", "auth-provider", "tokenFile", "username"} & user.keys():
        config.renewer = _LoaderAuth(loader, config, user)
    return config


def in_cluster(sa_dir: Path = SA_DIR, environ: dict[str, str] | None = None) -> KubeConfig:
    """The pod's service account (the projected token is read again every minute)."""
    env = dict(os.environ) if environ is None else environ
    if not env.get("KUBERNETES_SERVICE_HOST") or not (sa_dir / "token").exists():
        raise ConfigError("not running in a Kubernetes pod (no service account token)")
    loader = InClusterConfigLoader(
        token_filename=str(sa_dir / "token"), cert_filename=str(sa_dir / "ca.crt"), environ=env
    )
    configuration = Configuration()
    try:
        loader.load_and_set(configuration)
    except ConfigException as err:
        raise ConfigError(f"in-cluster configuration: {err}") from err
    namespace_file = sa_dir / "namespace"
    return KubeConfig(
        server=str(configuration.host).rstrip("/"),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
        token_file=sa_dir / "token",
        ca_file=sa_dir / "ca.crt",
        source="in-cluster",
    )


def load(kubeconfig: Path | None = None, context: str | None = None) -> KubeConfig:
    """An explicit kubeconfig or context, else in-cluster, else $KUBECONFIG / ~/.kube/config."""
    if kubeconfig is not None or context is not None:
        return from_kubeconfig(kubeconfig, context)
    try:
        return in_cluster()
    except ConfigError:
        return from_kubeconfig()

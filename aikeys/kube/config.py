"""Where the API server is and how to authenticate: kubeconfig or the in-cluster service account."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(RuntimeError):
    """No usable Kubernetes configuration; the message says what to do."""


@dataclass(frozen=True)
class KubeConfig:
    server: str
    namespace: str = "default"
    token: str | None = None
    token_file: Path | None = None  # re-read on use: projected tokens rotate
    ca_file: Path | None = None
    insecure: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    context: str | None = None

    def bearer(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


def _materialise(data_b64: str, suffix: str) -> Path:
    """kubeconfig `*-data` fields → a private temp file (ssl wants paths)."""
    fd, name = tempfile.mkstemp(prefix="aikeys-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data_b64))
    return Path(name)


def _named(items: list[dict[str, Any]], name: str, what: str, path: Path) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            found: dict[str, Any] = item.get(what, {})
            return found
    raise ConfigError(f"{path}: no {what} named {name!r}")


def from_kubeconfig(path: Path | None = None, context: str | None = None) -> KubeConfig:
    """Read a kubeconfig ($KUBECONFIG's first file, else ~/.kube/config)."""
    if path is None:
        env = os.environ.get("KUBECONFIG", "")
        path = Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"
    if not path.exists():
        raise ConfigError(f"no kubeconfig at {path}: set KUBECONFIG or run inside a cluster")
    doc = yaml.safe_load(path.read_text()) or {}
    context = context or doc.get("current-context")
    if not context:
        raise ConfigError(f"{path}: no current-context; pass --context or run `kubectl config use-context`")
    ctx = _named(doc.get("contexts", []), context, "context", path)
    cluster = _named(doc.get("clusters", []), ctx["cluster"], "cluster", path)
    user = _named(doc.get("users", []), ctx.get("user", ""), "user", path) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"{path}: user {ctx.get('user')!r} authenticates with an exec/auth-provider plugin, which aikeys "
            "does not run; use a token or client-certificate kubeconfig"
        )

    def file_or_data(file_key: str, data_key: str, src: dict[str, Any], suffix: str) -> Path | None:
        if src.get(data_key):
            return _materialise(src[data_key], suffix)
        if src.get(file_key):
            p = Path(src[file_key]).expanduser()
            return p if p.is_absolute() else (path.parent / p)
        return None

    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        namespace=ctx.get("namespace") or "default",
        token=user.get("token"),
        token_file=token_file,
        ca_file=file_or_data("certificate-authority", "certificate-authority-data", cluster, ".crt"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=file_or_data("client-certificate", "client-certificate-data", user, ".crt"),
        key_file=file_or_data("client-key", "client-key-data", user, ".key"),
        context=context,
    )


def in_cluster(sa_dir: Path = SA_DIR) -> KubeConfig:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (sa_dir / "token").exists():
        raise ConfigError("not running in a Kubernetes pod (no service account token)")
    namespace = (sa_dir / "namespace").read_text().strip() if (sa_dir / "namespace").exists() else "default"
    host = f"[{host}]" if ":" in host else host
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=namespace,
        token_file=sa_dir / "token",
        ca_file=sa_dir / "ca.crt",
    )


def load(kubeconfig: Path | None = None, context: str | None = None) -> KubeConfig:
    """An explicit kubeconfig, else in-cluster, else $KUBECONFIG / ~/.kube/config."""
    if kubeconfig is not None or context is not None:
        return from_kubeconfig(kubeconfig, context)
    try:
        return in_cluster()
    except ConfigError:
        return from_kubeconfig()

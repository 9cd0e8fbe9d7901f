"""Kubeconfig loading as kubectl does it (kubernetes_asyncio's loaders), without a server."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aikeys.kube import config as kube_config
from aikeys.kube.config import ConfigError, from_kubeconfig, in_cluster, kubeconfig_paths

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _cluster(name: str = "c", **fields: Any) -> dict[str, Any]:
    return {"name": name, "cluster": {"server": "https://k.example:6443/", **fields}}


def test_several_files_merge_as_kubectl_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.crt").write_text(PEM)
    first = _write(
        tmp_path / "a",
        {"clusters": [_cluster(**{"certificate-authority": "ca.crt"})], "current-context": "one"},
    )
    second = _write(
        tmp_path / "b",
        {
            "users": [{"name": "u", "user": {"token": "t0k"}}],
            "contexts": [
                {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
                {"name": "two", "context": {"cluster": "c", "user": "u"}},
            ],
            "current-context": "two",  # the first file that sets it wins
        },
    )
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{tmp_path / 'absent'}{os.pathsep}{second}")
    cfg = from_kubeconfig()
    assert (cfg.server, cfg.context, cfg.namespace) == ("https://k.example:6443", "one", "team-a")
    assert cfg.ca_file == tmp_path / "ca.crt"  # relative to the file that names it
    assert asyncio.run(cfg.authorization()) == "Bearer t0k"
    assert from_kubeconfig(context="two").namespace == "default"
    assert kubeconfig_paths(tmp_path / "x") == [tmp_path / "x"]  # --kubeconfig wins over KUBECONFIG
    with pytest.raises(ConfigError, match="nope"):
        from_kubeconfig(context="nope")


def test_cluster_fields_and_inline_data(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "config",
        {
            "clusters": [
                _cluster(
                    **{
                        "certificate-authority-data": base64.b64encode(PEM.encode()).decode(),
                        "tls-server-name": "kubernetes",
                        "proxy-url": "http://proxy.example:3128",
                    }
                ),
                {"name": "lax", "cluster": {"server": "https://lax:6443", "insecure-skip-tls-verify": True}},
            ],
            "users": [
                {
                    "name": "cert",
                    "user": {
                        "client-certificate-data": base64.b64encode(PEM.encode()).decode(),
                        "client-key-data": base64.b64encode(b"KEY").decode(),
                    },
                }
            ],
            "contexts": [
                {"name": "x", "context": {"cluster": "c", "user": "cert"}},
                {"name": "y", "context": {"cluster": "lax", "user": "cert"}},
            ],
            "current-context": "x",
        },
    )
    cfg = from_kubeconfig(config)
    assert (cfg.tls_server_name, cfg.proxy, cfg.insecure) == (
        "kubernetes",
        "http://proxy.example:3128",
        False,
    )
    assert cfg.ca_file is not None and cfg.ca_file.read_text() == PEM
    assert cfg.cert_file is not None and cfg.key_file is not None and cfg.key_file.read_bytes() == b"KEY"
    assert asyncio.run(cfg.authorization()) is None  # a certificate user sends no header
    assert from_kubeconfig(config, "y").insecure is True


def _plugin(tmp_path: Path, body: str) -> Path:
    plugin = tmp_path / "plugin"
    plugin.write_text(f"#!{sys.executable}\n{body}\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    return plugin


def _exec(command: Path) -> dict[str, str]:
    return {"apiVersion": "client.authentication.k8s.io/v1", "command": str(command)}


def test_exec_plugins_run_lazily_and_renew(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.write_text("0")
    plugin = _plugin(
        tmp_path,
        f"""import json, pathlib
p = pathlib.Path({str(runs)!r}); n = int(p.read_text()) + 1; p.write_text(str(n))
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": f"tok-{{n}}", "expirationTimestamp": "2999-01-01T00:00:00Z"}}}}))""",
    )
    config = _write(
        tmp_path / "config",
        {
            "clusters": [_cluster()],
            "users": [
                {
                    "name": "e",
                    "user": {
                        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}
                    },
                }
            ],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "e"}}],
            "current-context": "x",
        },
    )
    cfg = from_kubeconfig(config)
    assert runs.read_text() == "0"  # nothing runs until a request needs it
    assert cfg.renewable

    async def headers() -> list[str | None]:
        return [await cfg.authorization(), await cfg.authorization(), await cfg.authorization(renew=True)]

    assert asyncio.run(headers()) == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    failing = _write(
        tmp_path / "failing",
        {
            "clusters": [_cluster()],
            "users": [
                {
                    "name": "e",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1",
                            "command": str(_plugin(tmp_path, "raise SystemExit(3)")),
                        }
                    },
                }
            ],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "e"}}],
            "current-context": "x",
        },
    )
    with pytest.raises(ConfigError, match="could not get credentials"):
        asyncio.run(from_kubeconfig(failing).authorization())


def test_token_files_are_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("first\n")
    config = _write(
        tmp_path / "config",
        {
            "clusters": [_cluster()],
            "users": [{"name": "sa", "user": {"tokenFile": "token"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "sa"}}],
            "current-context": "x",
        },
    )
    cfg = from_kubeconfig(config)

    async def read() -> str | None:
        return await cfg.authorization()

    assert asyncio.run(read()) == "Bearer first"
    (tmp_path / "token").write_text("second\n")
    assert asyncio.run(read()) == "Bearer first"  # cached for a minute
    monkeypatch.setattr(kube_config, "REREAD_SECONDS", 0.0)
    assert asyncio.run(read()) == "Bearer second"


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text(PEM)
    (tmp_path / "namespace").write_text("aikeys-system")
    cfg = in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert (cfg.server, cfg.namespace, cfg.ca_file) == (
        "https://[fd00::1]:443",
        "aikeys-system",
        tmp_path / "ca.crt",
    )
    assert asyncio.run(cfg.authorization()) == "Bearer sa-token"
    with pytest.raises(ConfigError, match="not running in a Kubernetes pod"):
        in_cluster(tmp_path, {})


def test_no_kubeconfig_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no kubeconfig at .*KUBECONFIG"):
        from_kubeconfig(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="no kubeconfig"):
        from_kubeconfig(empty)
    no_context = _write(tmp_path / "nocontext", {"clusters": [_cluster()]})
    with pytest.raises(ConfigError, match="no current-context"):
        from_kubeconfig(no_context)

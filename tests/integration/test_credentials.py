"""`kubectl aikeys` finds credentials as kubectl does, on the real control plane: a token user, a
client-certificate user, an exec-plugin user, a ServiceAccount (token file and in-cluster), and the
kubeconfig rules around them (several files in KUBECONFIG, --context, tls-server-name,
insecure-skip-tls-verify)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.services import OperatorProcess

from aikeys.kube.client import Forbidden, KubeClient, NotFound, Unauthorized
from aikeys.kube.config import ConfigError, from_kubeconfig, in_cluster
from tests.integration.kube import apply_allocation

pytestmark = pytest.mark.integration
NS = "creds"
OTHER = "creds-other"
GROUP = "aikeys-readers"  # the client-certificate user's group (its certificate's O)


def aikeys(kubeconfig: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "aikeys.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, operator: OperatorProcess) -> ControlPlane:
    cp = control_plane
    for ns in (NS, OTHER):
        cp.kubectl("create", "namespace", ns)
        apply_allocation(cp, ns, "team", "10.00")
    cp.kubectl("create", "role", "reader", "-n", NS, "--verb=get,list,watch", "--resource=aikeys.aikeys.dev")
    cp.kubectl("create", "rolebinding", "readers", "-n", NS, "--role=reader", f"--group={GROUP}")
    for sa in ("robot", "plugin-user"):
        cp.kubectl("create", "serviceaccount", sa, "-n", NS)
        cp.kubectl(
            "create", "rolebinding", f"{sa}-reads", "-n", NS, "--role=reader", f"--serviceaccount={NS}:{sa}"
        )
    return cp


def kubeconfig_with(
    cp: ControlPlane, path: Path, user: dict[str, Any], namespace: str = NS, **cluster: Any
) -> Path:
    """The control plane's kubeconfig with another user (and cluster fields) in `namespace`."""
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": "someone", "user": user}]
    config["contexts"][0]["context"].update(user="someone", namespace=namespace)
    config["clusters"][0]["cluster"].update(cluster)
    path.write_text(yaml.safe_dump(config))
    return path


def listed(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [k["name"] for k in json.loads(result.stdout)]


def test_token_user(world: ControlPlane, tmp_path: Path) -> None:
    """The admin's static token (the kubeconfig the control plane writes)."""
    world.kubectl("apply", "-n", NS, "-f", "-", stdin=_key("tok"))
    assert "tok" in listed(aikeys(world.kubeconfig, "-n", NS, "keys", "list", "-o", "json"))


def test_client_certificate_user(world: ControlPlane, tmp_path: Path) -> None:
    pair = world.client_certificate("carol", (GROUP,))
    by_path = kubeconfig_with(
        world, tmp_path / "carol", {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
    )
    assert listed(aikeys(by_path, "keys", "list", "-o", "json")) is not None
    inline = kubeconfig_with(
        world,
        tmp_path / "carol-inline",
        {
            "client-certificate-data": base64.b64encode(pair.cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(pair.key.read_bytes()).decode(),
        },
    )
    assert aikeys(inline, "keys", "list", "-o", "json").returncode == 0
    # RBAC applies to the certificate's identity: nothing in the other namespace
    denied = aikeys(inline, "-n", OTHER, "keys", "list")
    assert denied.returncode != 0 and "not allowed" in denied.stderr and "carol" in denied.stderr


def exec_plugin(tmp_path: Path, tokens: list[str], expires_in: dt.timedelta | None) -> tuple[Path, Path]:
    """A kubectl exec credential plugin that prints tokens[n] on its n-th run (the last one after)."""
    counter = tmp_path / "runs"
    counter.write_text("0")
    status: dict[str, Any] = {}
    if expires_in is not None:
        status["expirationTimestamp"] = (dt.datetime.now(dt.UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, os, pathlib
            info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])  # what kubectl hands a plugin
            counter = pathlib.Path({str(counter)!r})
            runs = int(counter.read_text()) + 1
            counter.write_text(str(runs))
            tokens = {tokens!r}
            status = dict({status!r}, token=tokens[min(runs, len(tokens)) - 1])
            kind = "ExecCredential"
            print(json.dumps({{"apiVersion": info["apiVersion"], "kind": kind, "status": status}}))
            """
        )
    )
    plugin.chmod(0o755)
    return plugin, counter


def exec_user(plugin: Path) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }


def test_exec_plugin_user(world: ControlPlane, tmp_path: Path) -> None:
    token = world.kubectl("create", "token", "plugin-user", "-n", NS).stdout.strip()
    plugin, runs = exec_plugin(tmp_path, [token], dt.timedelta(hours=1))
    config = kubeconfig_with(world, tmp_path / "exec", exec_user(plugin))
    assert listed(aikeys(config, "keys", "list", "-o", "json")) is not None
    assert runs.read_text() == "1"
    # kubectl itself accepts the same kubeconfig (the plugin speaks the real protocol)
    world.kubectl("get", "aikeys", "-n", NS, f"--kubeconfig={config}")
    denied = aikeys(config, "-n", OTHER, "keys", "list")
    assert denied.returncode != 0 and f"system:serviceaccount:{NS}:plugin-user" in denied.stderr

    async def many_requests() -> None:
        cfg = from_kubeconfig(config)
        async with KubeClient(cfg) as client:
            for _ in range(5):
                await client.get(f"/apis/aikeys.dev/v1alpha1/namespaces/{NS}/aikeys")

    runs.write_text("0")
    asyncio.run(many_requests())
    assert runs.read_text() == "1"  # the credential is kept until it expires


def test_exec_plugin_credential_refused_is_renewed_once(world: ControlPlane, tmp_path: Path) -> None:
    """A token the API server refuses (401) makes the client run the plugin again, once."""
    token = world.kubectl("create", "token", "plugin-user", "-n", NS).stdout.strip()
    plugin, runs = exec_plugin(tmp_path, ["revoked-token", token], None)
    config = kubeconfig_with(world, tmp_path / "exec", exec_user(plugin))
    assert listed(aikeys(config, "keys", "list", "-o", "json")) is not None
    assert runs.read_text() == "2"
    (tmp_path / "bad").mkdir()
    plugin2, runs2 = exec_plugin(tmp_path / "bad", ["bad", "still-bad"], None)
    bad = kubeconfig_with(world, tmp_path / "exec-bad", exec_user(plugin2))
    refused = aikeys(bad, "keys", "list")
    assert refused.returncode != 0 and "did not accept your credentials" in refused.stderr
    assert runs2.read_text() == "2"


def test_service_account(world: ControlPlane, tmp_path: Path) -> None:
    token = world.kubectl("create", "token", "robot", "-n", NS).stdout.strip()
    token_file = tmp_path / "token"
    token_file.write_text(token)
    # a kubeconfig that points at the projected token (tokenFile, relative to the kubeconfig)
    config = kubeconfig_with(world, tmp_path / "sa", {"tokenFile": "token"})
    assert listed(aikeys(config, "keys", "list", "-o", "json")) is not None
    # inside a pod: the service account's directory and the KUBERNETES_SERVICE_* variables
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(token)
    (sa_dir / "ca.crt").write_bytes(world.pki.ca_cert.read_bytes())
    (sa_dir / "namespace").write_text(NS)
    cfg = in_cluster(
        sa_dir, {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(world.apiserver_port)}
    )
    assert (cfg.server, cfg.namespace) == (world.url, NS)

    async def reads() -> tuple[int, type[Exception]]:
        async with KubeClient(cfg) as client:
            items = (await client.get(f"/apis/aikeys.dev/v1alpha1/namespaces/{NS}/aikeys"))["items"]
            try:
                await client.get(f"/apis/aikeys.dev/v1alpha1/namespaces/{OTHER}/aikeys")
            except Forbidden as err:
                return len(items), type(err)
        raise AssertionError("the service account read another namespace")

    assert asyncio.run(reads())[1] is Forbidden
    with pytest.raises(ConfigError, match="not running in a Kubernetes pod"):
        in_cluster(tmp_path / "nowhere", {"KUBERNETES_SERVICE_HOST": "127.0.0.1"})


def test_kubeconfig_rules(world: ControlPlane, tmp_path: Path) -> None:
    admin = yaml.safe_load(world.kubeconfig.read_text())
    token = admin["users"][0]["user"]["token"]
    # KUBECONFIG with two files: the cluster and current-context in one, the user and contexts in the other
    clusters = tmp_path / "clusters"
    clusters.write_text(yaml.safe_dump({"clusters": admin["clusters"], "current-context": "mine"}))
    users = tmp_path / "users"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [{"name": "me", "user": {"token": token}}],
                "contexts": [
                    {"name": "mine", "context": {"cluster": "aikeys-local", "user": "me", "namespace": NS}},
                    {
                        "name": "elsewhere",
                        "context": {"cluster": "aikeys-local", "user": "me", "namespace": OTHER},
                    },
                ],
                "current-context": "elsewhere",  # the first file's wins, as in kubectl
            }
        )
    )
    merged = f"{clusters}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{users}"
    tok = aikeys(merged, "keys", "list", "-o", "json")
    assert tok.returncode == 0, tok.stderr
    env_cfg = _with_env(merged, from_kubeconfig)
    assert (env_cfg.context, env_cfg.namespace) == ("mine", NS)
    assert _with_env(merged, lambda: from_kubeconfig(context="elsewhere")).namespace == OTHER
    other = aikeys(merged, "--context", "elsewhere", "keys", "list", "-o", "json")
    assert other.returncode == 0, other.stderr
    # tls-server-name: the name the serving certificate is checked against
    ok = kubeconfig_with(world, tmp_path / "sni", {"token": token}, **{"tls-server-name": "kubernetes"})
    assert aikeys(ok, "keys", "list").returncode == 0
    wrong = kubeconfig_with(
        world, tmp_path / "sni-wrong", {"token": token}, **{"tls-server-name": "wrong.test"}
    )
    refused = aikeys(wrong, "keys", "list")
    assert refused.returncode != 0 and "wrong.test" in refused.stderr
    # insecure-skip-tls-verify: no CA at all
    insecure = yaml.safe_load(kubeconfig_with(world, tmp_path / "insecure", {"token": token}).read_text())
    insecure["clusters"][0]["cluster"] = {"server": world.url, "insecure-skip-tls-verify": True}
    (tmp_path / "insecure").write_text(yaml.safe_dump(insecure))
    assert aikeys(tmp_path / "insecure", "keys", "list").returncode == 0
    missing_ctx = aikeys(world.kubeconfig, "--context", "nope", "keys", "list")
    assert (
        missing_ctx.returncode != 0 and "nope" in missing_ctx.stderr and "Traceback" not in missing_ctx.stderr
    )


def _with_env(kubeconfig: str, fn: Callable[[], Any]) -> Any:
    saved = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = kubeconfig
    try:
        return fn()
    finally:
        if saved is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = saved


def test_api_errors_are_typed(world: ControlPlane, tmp_path: Path) -> None:
    async def go() -> None:
        async with KubeClient(from_kubeconfig(world.kubeconfig)) as client:
            with pytest.raises(NotFound):
                await client.get(f"/apis/aikeys.dev/v1alpha1/namespaces/{NS}/aikeys/none")
            assert await client.get_or_none(f"/apis/aikeys.dev/v1alpha1/namespaces/{NS}/aikeys/none") is None
        bad = kubeconfig_with(world, tmp_path / "bad", {"token": "not-a-token"})
        async with KubeClient(from_kubeconfig(bad)) as client:
            with pytest.raises(Unauthorized):
                await client.get("/api/v1/namespaces")

    asyncio.run(go())


def _key(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "aikeys.dev/v1alpha1",
            "kind": "AIKey",
            "metadata": {"name": name},
            "spec": {"allocationRef": {"name": "team"}},
        }
    )


@contextlib.contextmanager
def connect_proxy() -> Iterator[tuple[str, list[str]]]:
    """An HTTP proxy on loopback that only tunnels (CONNECT), as corporate proxies do; yields its URL
    and the targets it was asked for."""
    seen: list[str] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    where: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        method, target, _ = request.split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        seen.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        where.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield f"http://127.0.0.1:{where[0]}", seen
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_proxy_url(world: ControlPlane, tmp_path: Path) -> None:
    """A cluster behind an HTTP proxy (kubeconfig proxy-url): the CLI tunnels through it, like kubectl."""
    token = yaml.safe_load(world.kubeconfig.read_text())["users"][0]["user"]["token"]
    with connect_proxy() as (proxy, seen):
        config = kubeconfig_with(world, tmp_path / "proxied", {"token": token}, **{"proxy-url": proxy})
        result = aikeys(config, "keys", "list", "-o", "json")
        assert result.returncode == 0, result.stderr
        assert f"127.0.0.1:{world.apiserver_port}" in seen
        world.kubectl("get", "namespaces", f"--kubeconfig={config}")  # kubectl reads it the same way
        assert len(seen) >= 2
    nowhere = kubeconfig_with(
        world, tmp_path / "no-proxy", {"token": token}, **{"proxy-url": "http://127.0.0.1:9"}
    )
    refused = aikeys(nowhere, "keys", "list")
    assert refused.returncode != 0 and "cannot reach the cluster" in refused.stderr

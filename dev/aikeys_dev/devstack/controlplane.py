"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

    with start_control_plane(tmp_path) as cp:
        cp.kubectl("get", "--raw", "/version")

The apiserver authenticates an admin user by bearer token (system:masters), other users by
client certificates from our own CA (`client_certificate`), authorises with RBAC, serves TLS from
that CA and signs service-account tokens, so TokenRequest, RBAC and ownerReference garbage
collection behave as on a real cluster. Its front proxy is configured as kubeadm does it (a
front-proxy CA, the `front-proxy-client` certificate, X-Remote-* headers), so aggregated APIs
(APIService) work; an APIService whose Service is of type ExternalName `localhost` reaches a
server on this machine. Everything binds to 127.0.0.1
on free ports and is torn down on exit (see `processes.Child`).
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aikeys_dev.devstack.binaries import Binaries, ensure_built
from aikeys_dev.devstack.pki import FRONT_PROXY_CLIENT, Pair, Pki, client_certificate, write_pki
from aikeys_dev.devstack.processes import Child, free_port

ADMIN_USER = "aikeys-admin"
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = [
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
]


def _get(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)  # noqa: S310 - our own loopback URLs
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:  # noqa: S310
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


@dataclass
class ControlPlane:
    """A running control plane; `kubeconfig` and `kubectl()` are how tests talk to it."""

    workdir: Path
    binaries: Binaries
    pki: Pki
    token: str
    etcd_port: int
    apiserver_port: int
    kubeconfig: Path
    children: dict[str, Child] = field(default_factory=dict)
    startup_seconds: float = 0.0
    # Where every component listens and is reached: loopback, or a node's address when the
    # control plane runs in the node's network namespace (aikeys_dev.devstack.node).
    address: str = "127.0.0.1"
    # argv prefix that runs a component inside that namespace (e.g. nsenter --net=...)
    wrap: tuple[str, ...] = ()
    controllers: tuple[str, ...] = tuple(CONTROLLERS)
    extra_args: dict[str, list[str]] = field(default_factory=dict)  # component name → more flags

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    def _child(self, name: str, argv: list[str]) -> Child:
        """A component's Child: wrapped into its namespace, with its extra flags, logging to logs/."""
        full = [*self.wrap, *argv, *self.extra_args.get(name, [])]
        return Child(name, full, self.workdir / "logs" / f"{name}.log")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def api_get(self, path: str) -> tuple[int, str]:
        """GET a path on the apiserver as the admin user."""
        return _get(self.url + path, token=self.token, context=self.ssl_context())

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG pointing at this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane; raises with stderr when `check`."""
        result = subprocess.run(
            [str(self.binaries.kubectl), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    # --- lifecycle -------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        peer = free_port()
        etcd = f"http://{self.address}:{self.etcd_port}"
        child = self._child(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=aikeys",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd}",
                f"--advertise-client-urls={etcd}",
                f"--listen-peer-urls=http://{self.address}:{peer}",
                f"--initial-advertise-peer-urls=http://{self.address}:{peer}",
                f"--initial-cluster=aikeys=http://{self.address}:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        ).start()
        self.children["etcd"] = child
        child.wait_until(lambda: _get(f"{etcd}/health")[0] == 200, timeout=30, what="healthy")

    def start_apiserver(self) -> float:
        """(Re)start kube-apiserver on its port; returns seconds until /readyz answered ok."""
        child = self._child(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://{self.address}:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                f"--client-ca-file={self.pki.ca_cert}",
                # the front proxy: how the apiserver vouches for users towards aggregated APIs
                f"--requestheader-client-ca-file={self.pki.front_proxy_ca}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self.pki.proxy_client_cert}",
                f"--proxy-client-key-file={self.pki.proxy_client_key}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={self.pki.sa_pub}",
                f"--service-account-signing-key-file={self.pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
            ],
        ).start()
        self.children["kube-apiserver"] = child
        ctx = self.ssl_context()
        return child.wait_until(
            lambda: _get(self.url + "/readyz", token=self.token, context=ctx)[0] == 200, timeout=90
        )

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (etcd and the data stay); `start_apiserver` brings it back."""
        self.children.pop("kube-apiserver").stop()

    def _start_controller_manager(self) -> None:
        port = free_port()
        child = self._child(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--bind-address={self.address}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false",
                f"--controllers={','.join(self.controllers)}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--use-service-account-credentials=false",
            ],
        ).start()
        self.children["kube-controller-manager"] = child
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving cert; only /healthz is read
        child.wait_until(
            lambda: _get(f"https://{self.address}:{port}/healthz", context=insecure)[0] == 200, timeout=60
        )

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "aikeys-local",
                    "cluster": {"server": self.url, "certificate-authority": str(self.pki.ca_cert)},
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "aikeys-local",
                    "context": {"cluster": "aikeys-local", "user": ADMIN_USER, "namespace": "default"},
                }
            ],
            "current-context": "aikeys-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def client_certificate(self, user: str, groups: tuple[str, ...] = ()) -> Pair:
        """A client certificate (and key) for `user` in `groups`, signed by the cluster's CA."""
        return client_certificate(self.pki, self.workdir / "users", user, groups)

    def version(self) -> dict[str, str]:
        status, body = self.api_get("/version")
        if status != 200:
            raise RuntimeError(f"/version answered {status}: {body}")
        parsed: dict[str, str] = json.loads(body)
        return parsed

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            child = self.children.pop(name, None)
            if child is not None:
                child.stop()


def launch(
    workdir: Path,
    binaries: Binaries | None = None,
    controller_manager: bool = True,
    *,
    address: str = "127.0.0.1",
    wrap: tuple[str, ...] = (),
    controllers: tuple[str, ...] = tuple(CONTROLLERS),
    extra_ips: tuple[str, ...] = (),
    extra_args: dict[str, list[str]] | None = None,
) -> ControlPlane:
    """Start a control plane in `workdir` (created if needed). Caller must `stop()` it.

    The defaults serve tests and `make dev` on loopback; a real node (aikeys_dev.devstack.node) runs
    it inside its network namespace (`wrap`) on the node's `address`, with every controller."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    (workdir / "tokens.csv").write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    (workdir / "tokens.csv").chmod(0o600)
    cp = ControlPlane(
        workdir=workdir,
        binaries=binaries or ensure_built(),
        pki=write_pki(workdir / "pki", extra_ips=tuple({address, *extra_ips} - {"127.0.0.1"})),
        token=token,
        etcd_port=free_port(),
        apiserver_port=free_port(),
        kubeconfig=workdir / "kubeconfig",
        address=address,
        wrap=wrap,
        controllers=controllers,
        extra_args=extra_args or {},
    )
    try:
        cp._write_kubeconfig()
        cp._start_etcd()
        cp.start_apiserver()
        if controller_manager:
            cp._start_controller_manager()
    except BaseException:
        cp.stop()
        raise
    cp.startup_seconds = time.monotonic() - started
    return cp


@contextmanager
def start_control_plane(workdir: Path, controller_manager: bool = True) -> Iterator[ControlPlane]:
    cp = launch(workdir, controller_manager=controller_manager)
    try:
        yield cp
    finally:
        cp.stop()

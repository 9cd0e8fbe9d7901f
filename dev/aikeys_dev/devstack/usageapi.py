"""The gateway's usage API registered with a loopback control plane (what the chart does in a cluster).

An APIService `v1alpha1.usage.aikeys.dev` names a Service; the kube-apiserver proxies to it with its
front-proxy client certificate and checks our serving certificate against the APIService's
caBundle, for the name `<service>.<namespace>.svc`. On a machine without a cluster network the
Service is of type ExternalName `localhost`, so the apiserver dials the gateway's port on loopback.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.pki import make_ca, sign, write_pair
from aikeys_dev.devstack.processes import free_port

GROUP = "usage.aikeys.dev"
VERSION = "v1alpha1"
APISERVICE = f"{VERSION}.{GROUP}"


@dataclass(frozen=True)
class UsageAPI:
    port: int
    cert: Path
    key: Path
    ca_cert: Path

    def env(self, host: str = "127.0.0.1") -> dict[str, str]:
        """What the gateway process needs to serve it."""
        return {
            "AIKEYS_USAGE_API_PORT": str(self.port),
            "AIKEYS_USAGE_API_HOST": host,
            "AIKEYS_USAGE_API_CERT": str(self.cert),
            "AIKEYS_USAGE_API_KEY": str(self.key),
        }


def manifests(namespace: str, service: str, port: int, ca_pem: bytes) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": GROUP,
                "version": VERSION,
                "groupPriorityMinimum": 1000,
                "versionPriority": 15,
                "service": {"name": service, "namespace": namespace, "port": port},
                "caBundle": base64.b64encode(ca_pem).decode(),
            },
        },
    ]


def register(
    cp: ControlPlane,
    workdir: Path,
    namespace: str = "aikeys-system",
    service: str = "aikeys-usage-api",
    port: int | None = None,
) -> UsageAPI:
    """Serving certificate, port, Service and APIService for a gateway about to start."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = make_ca("aikeys-usage-api-ca")
    names = (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", "localhost")
    cert, key = sign(ca, f"{service}.{namespace}.svc", dns_names=names, ips=("127.0.0.1",), server=True)
    pair = write_pair(cert, key, workdir / "usage-api.crt", workdir / "usage-api.key")
    ca_pair = write_pair(*ca, workdir / "usage-api-ca.crt", workdir / "usage-api-ca.key")
    api = UsageAPI(port or free_port(), pair.cert, pair.key, ca_pair.cert)
    apply(cp, api, namespace, service)
    return api


def apply(
    cp: ControlPlane, api: UsageAPI, namespace: str = "aikeys-system", service: str = "aikeys-usage-api"
) -> None:
    """(Re-)create the Service and the APIService that lead the API server to `api`."""
    cp.kubectl("create", "namespace", namespace, check=False)
    docs = manifests(namespace, service, api.port, api.ca_cert.read_bytes())
    cp.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def unregister(cp: ControlPlane) -> None:
    """Remove the APIService (the API name is cluster-wide: one server at a time)."""
    cp.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found")


def wait_available(cp: ControlPlane, timeout: float = 30) -> float:
    """Until the aggregator marks the APIService Available (it reached our discovery document) and
    discovery lists the resource; returns the seconds it took."""
    started = time.monotonic()
    cp.kubectl("wait", "--for=condition=Available", f"apiservice/{APISERVICE}", f"--timeout={int(timeout)}s")
    while time.monotonic() - started < timeout:
        status, _ = cp.api_get(f"/apis/{GROUP}/{VERSION}")
        if status == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"/apis/{GROUP}/{VERSION} did not answer through the API server in {timeout}s")

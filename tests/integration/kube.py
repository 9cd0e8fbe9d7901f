"""Helpers for tests that need the aikeys API on the real control plane."""

from __future__ import annotations

import base64
import contextlib
import json
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aikeys_dev.devstack.admission import apply_owner_policy
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.services import GatewayProcess

from aikeys import credentials
from aikeys.crds import REPO_CRDS
from aikeys.resources import KINDS


def install_crds(cp: ControlPlane) -> None:
    """Apply crds/ (idempotent), wait until every CRD is Established, and enforce the chart's
    key-owner admission policy, as a cluster with the chart does."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_CRDS))
    for kind in KINDS:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")
    apply_owner_policy(cp)


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object as JSON, or None when it does not exist."""
    result = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise RuntimeError(result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def key_uids(cp: ControlPlane, namespace: str) -> dict[str, str]:
    """name → metadata.uid of the namespace's AIKeys: what the ledger counts a key by."""
    listing = json.loads(cp.kubectl("get", "aikeys", "-n", namespace, "-o", "json").stdout)
    return {o["metadata"]["name"]: o["metadata"]["uid"] for o in listing["items"]}


T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `fn` until it returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def apply(cp: ControlPlane, manifest: str, namespace: str) -> None:
    cp.kubectl("apply", "-n", namespace, "-f", "-", stdin=textwrap.dedent(manifest))


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cp.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def create_key(cp: ControlPlane, namespace: str, name: str, allocation: str, extra: str = "") -> str:
    """Apply an AIKey, wait until it is Active, return its plaintext from the Secret."""
    apply(
        cp,
        f"""
        apiVersion: aikeys.dev/v1alpha1
        kind: AIKey
        metadata: {{name: {name}}}
        spec:
          allocationRef: {{name: {allocation}}}
          {extra}
    """,
        namespace,
    )

    def plaintext() -> str | None:
        obj = get(cp, "aikey", name, namespace)
        if not obj or (obj.get("status") or {}).get("phase") not in ("Active", "Disabled", "Expired"):
            return None
        secret = get(cp, "secret", f"aikey-{name}", namespace)
        return base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode() if secret else None

    return wait_for(plaintext, 30, f"AIKey {namespace}/{name} to be minted")


def delete_key(cp: ControlPlane, namespace: str, name: str) -> None:
    """Delete an AIKey and its Secret (not left to the garbage collector, which may not know the
    AIKey kind yet in a young control plane), so that a new key of the same name starts clean."""
    cp.kubectl("delete", "aikey", name, "-n", namespace)
    cp.kubectl("delete", "secret", f"aikey-{name}", "-n", namespace, "--ignore-not-found")


def gateway_knows(openai_url: str, key: str, timeout: float = 10) -> None:
    """Wait until the gateway's cache has the key (GET /models answers 200)."""

    def ok() -> bool:
        req = urllib.request.Request(f"{openai_url}/models", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - loopback
                return int(resp.status) == 200
        except urllib.error.HTTPError:
            return False

    wait_for(ok, timeout, "the gateway to know the key")


def create_provider_secret(
    cp: ControlPlane,
    namespace: str,
    name: str,
    api_key: str,
    key: str = "apiKey",
    secret_type: str = credentials.SECRET_TYPE,
) -> None:
    """A provider's credentials Secret, of the type the operator projects (pass another
    `secret_type`, e.g. "Opaque", for one it must refuse)."""
    cp.kubectl(
        "create",
        "secret",
        "generic",
        name,
        "-n",
        namespace,
        f"--type={secret_type}",
        f"--from-literal={key}={api_key}",
    )


def apply_provider(
    cp: ControlPlane,
    namespace: str,
    base_url: str,
    models: dict[str, tuple[str, str]],
    name: str = "mock",
    upstream_names: dict[str, str] | None = None,
    **spec: Any,
) -> None:
    """An AIProvider; `models` maps names to (input, output) USD per million tokens, `upstream_names`
    gives some an upstreamName, `spec` adds fields."""
    renamed = upstream_names or {}
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {
            "baseURL": base_url,
            **spec,
            "models": [
                {"name": m, "inputPricePerMillion": pin, "outputPricePerMillion": pout}
                | ({"upstreamName": renamed[m]} if m in renamed else {})
                for m, (pin, pout) in models.items()
            ],
        },
    }
    cp.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def apply_allocation(
    cp: ControlPlane, namespace: str, name: str, budget: str, period: str = "Monthly"
) -> None:
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "Allocation",
        "metadata": {"name": name},
        "spec": {"budget": budget, "period": period},
    }
    cp.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


@contextlib.contextmanager
def another_gateway(
    cp: ControlPlane, redis_url: str, log_dir: Path, key: str, **env: str
) -> Iterator[GatewayProcess]:
    """A second gateway process with its own settings (`env`), serving `key` once it knows it."""
    gw = GatewayProcess(
        cp.kubeconfig,
        redis_url,
        log_dir / "gateway.log",
        "aikeys-system/aikeys-provider-credentials",
        extra_env=env,
    ).start()
    try:
        gateway_knows(gw.openai_url, key)
        yield gw
    finally:
        gw.stop()

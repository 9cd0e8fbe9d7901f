"""The Go-built control plane behaves like a real cluster where aikeys depends on it."""

from __future__ import annotations

import json
import time

import pytest
from aikeys_dev.devstack.binaries import read_versions
from aikeys_dev.devstack.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def _wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_serves_the_pinned_version(control_plane: ControlPlane) -> None:
    pinned = read_versions()["K8S_VERSION"]
    out = json.loads(control_plane.kubectl("get", "--raw", "/version").stdout)
    assert out["gitVersion"] == pinned
    assert (out["major"], out["minor"]) == tuple(pinned.lstrip("v").split(".")[:2])
    client = json.loads(control_plane.kubectl("version", "--client", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == pinned


def test_rbac_is_enforced_for_unprivileged_tokens(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "rbac-probe")
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", "rbac-probe")
    token = control_plane.kubectl("create", "token", "nobody", "-n", "rbac-probe").stdout.strip()
    denied = control_plane.kubectl("get", "secrets", "-n", "rbac-probe", f"--token={token}", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert "system:serviceaccount:rbac-probe:nobody" in denied.stderr


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.probe.aikeys.dev
spec:
  group: probe.aikeys.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
"""


def test_crd_becomes_established_and_serves_objects(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=CRD)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.probe.aikeys.dev", "--timeout=30s"
    )
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin="apiVersion: probe.aikeys.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n",
    )
    got = json.loads(control_plane.kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert got["spec"] == {"size": 3}


def test_owned_objects_are_garbage_collected(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "configmap", "gc-owner", "--from-literal=a=b")
    owner = json.loads(control_plane.kubectl("get", "configmap", "gc-owner", "-o", "json").stdout)
    owned = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "gc-owned",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "gc-owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "stringData": {"k": "v"},
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(owned))
    control_plane.kubectl("delete", "configmap", "gc-owner")

    def gone() -> bool:
        return control_plane.kubectl("get", "secret", "gc-owned", check=False).returncode != 0

    _wait(gone, 60, "the owned Secret to be garbage-collected")


def test_namespace_deletion_completes(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "ns-delete-probe")
    control_plane.kubectl("create", "configmap", "x", "-n", "ns-delete-probe")
    control_plane.kubectl("delete", "namespace", "ns-delete-probe", "--wait=true", "--timeout=60s")
    assert control_plane.kubectl("get", "namespace", "ns-delete-probe", check=False).returncode != 0


def test_apiserver_restarts_with_its_data(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "configmap", "survives-restart", "--from-literal=k=v")
    control_plane.stop_apiserver()
    assert (
        control_plane.kubectl("get", "configmap", "survives-restart", check=False, timeout=10).returncode != 0
    )
    control_plane.start_apiserver()
    got = json.loads(control_plane.kubectl("get", "configmap", "survives-restart", "-o", "json").stdout)
    assert got["data"] == {"k": "v"}

"""The generated CRDs on the real API server: explain, defaults, columns, readable refusals."""

from __future__ import annotations

import json
import textwrap

import pytest

from aikeys.devstack.controlplane import ControlPlane
from tests.integration.kube import install_crds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    control_plane.kubectl("create", "namespace", "crd-tests")
    return control_plane


def apply(api: ControlPlane, manifest: str) -> tuple[int, str]:
    result = api.kubectl("apply", "-n", "crd-tests", "-f", "-", stdin=textwrap.dedent(manifest), check=False)
    return result.returncode, result.stdout + result.stderr


ALLOC = """
    apiVersion: aikeys.dev/v1alpha1
    kind: Allocation
    metadata: {name: research}
    spec: {budget: "25.00"}
"""


def test_explain_reads_well(api: ControlPlane) -> None:
    out = api.kubectl("explain", "aikey.spec").stdout
    assert "allocationRef" in out
    assert "How long the key is valid after creation" in out
    assert "rotation" in out
    budget = api.kubectl("explain", "allocation.spec.budget").stdout
    assert "Spending limit per period in USD" in budget
    assert "An API key for the aikeys gateway" in api.kubectl("explain", "aik").stdout


def test_defaults_are_applied_by_the_server(api: ControlPlane) -> None:
    assert apply(api, ALLOC)[0] == 0
    got = json.loads(api.kubectl("get", "alloc", "research", "-n", "crd-tests", "-o", "json").stdout)
    assert got["spec"] == {"budget": "25.00", "period": "Monthly", "alertThresholds": [80, 100]}


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: AIKey
            metadata: {name: both}
            spec: {allocationRef: {name: research}, ttl: 720h, expiresAt: "2030-01-01T00:00:00Z"}
            """,
            "set either spec.ttl or spec.expiresAt, not both",
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: AIKey
            metadata: {name: forever}
            spec: {allocationRef: {name: research}, ttl: forever}
            """,
            'spec.ttl must be a duration like "720h", "30d" or "1h30m"',
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: AIKey
            metadata: {name: orphan}
            spec: {ttl: 1h}
            """,
            "spec.allocationRef: Required value",
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: Allocation
            metadata: {name: words}
            spec: {budget: "ten dollars"}
            """,
            'spec.budget must be a USD amount like "25.00"',
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: Allocation
            metadata: {name: weird-period}
            spec: {budget: "1", period: Yearly}
            """,
            'Unsupported value: "Yearly": supported values: "None", "Daily", "Weekly", "Monthly"',
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: AIProvider
            metadata: {name: azure}
            spec:
              type: azure-openai
              baseURL: https://example.openai.azure.com
              models: [{name: gpt-4o, inputPricePerMillion: "2.50", outputPricePerMillion: "10"}]
            """,
            "spec.azure.apiVersion is required when type is azure-openai",
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: AIProvider
            metadata: {name: price}
            spec:
              baseURL: http://vllm:8000/v1
              models: [{name: llama, inputPricePerMillion: "-1", outputPricePerMillion: "0.5"}]
            """,
            'inputPricePerMillion must be a USD amount like "25.00"',
        ),
        (
            """
            apiVersion: aikeys.dev/v1alpha1
            kind: AIProvider
            metadata: {name: dup}
            spec:
              baseURL: http://vllm:8000/v1
              models:
              - {name: llama, inputPricePerMillion: "0", outputPricePerMillion: "0"}
              - {name: llama, inputPricePerMillion: "1", outputPricePerMillion: "1"}
            """,
            "Duplicate value",
        ),
    ],
)
def test_invalid_objects_are_refused_with_a_clear_message(
    api: ControlPlane, manifest: str, message: str
) -> None:
    code, out = apply(api, manifest)
    assert code != 0
    assert message in out


def test_rotation_only_increases(api: ControlPlane) -> None:
    key = """
        apiVersion: aikeys.dev/v1alpha1
        kind: AIKey
        metadata: {name: rotating}
        spec: {allocationRef: {name: research}, rotation: %d}
    """
    assert apply(api, key % 2)[0] == 0
    code, out = apply(api, key % 1)
    assert code != 0
    assert "rotation can only increase (bump it to rotate the key)" in out
    assert apply(api, key % 3)[0] == 0


def test_get_ai_lists_all_three_kinds_with_columns(api: ControlPlane) -> None:
    apply(api, ALLOC)
    apply(
        api,
        """
        apiVersion: aikeys.dev/v1alpha1
        kind: AIProvider
        metadata: {name: local}
        spec:
          baseURL: http://vllm:8000/v1
          models: [{name: llama, inputPricePerMillion: "0", outputPricePerMillion: "0"}]
    """,
    )
    apply(
        api,
        """
        apiVersion: aikeys.dev/v1alpha1
        kind: AIKey
        metadata: {name: listed}
        spec: {allocationRef: {name: research}, ttl: 720h}
    """,
    )
    out = api.kubectl("get", "ai", "-n", "crd-tests").stdout
    assert "aikey.aikeys.dev/listed" in out
    assert "allocation.aikeys.dev/research" in out
    assert "aiprovider.aikeys.dev/local" in out
    headers = [line.split() for line in out.splitlines() if line.startswith("NAME")]
    assert ["NAME", "ALLOCATION", "PHASE", "KEY", "EXPIRES", "LAST", "USED", "SPEND", "AGE"] in headers
    assert ["NAME", "BUDGET", "SPENT", "REMAINING", "PERIOD", "EXHAUSTED", "AGE"] in headers
    assert ["NAME", "TYPE", "MODELS", "SHARED", "READY", "AGE"] in headers
    short = api.kubectl("get", "aik,alloc,aip", "-n", "crd-tests", "-o", "name").stdout.split()
    assert {
        "aikey.aikeys.dev/listed",
        "allocation.aikeys.dev/research",
        "aiprovider.aikeys.dev/local",
    } <= set(short)

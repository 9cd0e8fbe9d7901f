"""The generated CRDs on the real API server: explain, defaults, columns, readable refusals."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane

from tests.integration.kube import install_crds, wait_for

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


def explain(api: ControlPlane, what: str) -> str:
    """`kubectl explain`, once the API server publishes the CRDs' OpenAPI (a moment after they are
    Established: until then kubectl "couldn't find resource")."""

    def attempt() -> str | None:
        result = api.kubectl("explain", what, check=False)
        if result.returncode == 0:
            return result.stdout
        assert "couldn't find resource" in result.stderr, result.stderr
        return None

    return wait_for(attempt, 30, f"kubectl explain {what}", interval=0.5)


def test_explain_reads_well(api: ControlPlane) -> None:
    out = explain(api, "aikey.spec")
    assert "allocationRef" in out
    assert "How long the key is valid after creation" in out
    assert "rotation" in out
    budget = explain(api, "allocation.spec.budget")
    assert "Spending limit per period in USD" in budget
    assert "An API key for the aikeys gateway" in explain(api, "aik")


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


def provider(name: str, base_url: str = "http://vllm:8000/v1", model: Any = None, **spec: Any) -> str:
    """An AIProvider (JSON) with one model; `model` sets fields of the model, `spec` of the spec."""
    fields = {"name": "m", "inputPricePerMillion": "1", "outputPricePerMillion": "1", **(model or {})}
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {"baseURL": base_url, "models": [fields], **spec},
    }
    return json.dumps(body)


def key(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIKey",
        "metadata": {"name": name},
        "spec": {"allocationRef": {"name": "research"}, **spec},
    }
    return json.dumps(body)


def limited_allocation(name: str, **spec: Any) -> str:
    body = {"apiVersion": "aikeys.dev/v1alpha1", "kind": "Allocation", "metadata": {"name": name}}
    return json.dumps({**body, "spec": {"budget": "1", **spec}})


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (key("huge-ttl", ttl="1000000000h"), "spec.ttl must be at most 36500d"),
        (key("huge-ttl-days", ttl="36501d"), "spec.ttl must be at most 36500d"),
        (key("huge-ttl-sum", ttl="36000d12001h"), "spec.ttl must be at most 36500d"),
        (
            key("huge-grace", rotationGracePeriod="1000000000h"),
            "spec.rotationGracePeriod must be at most 365d",
        ),
        (key("long-window", limits={"requests": 1, "window": "25h"}), "limits.window must be at most 1d"),
        (key("no-window", limits={"requests": 1, "window": "0s"}), "limits.window must be more than 0s"),
        (
            limited_allocation("long-window", limits={"tokens": 1, "window": "2d"}),
            "limits.window must be at most 1d",
        ),
        (provider("slow", timeout="99999999999999999999s"), "spec.timeout must be at most 1d"),
        (provider("impatient", timeout="0ms"), "spec.timeout must be more than 0s"),
        (
            provider("model-window", model={"limits": {"requests": 1, "window": "1000000000h"}}),
            "limits.window must be at most 1d",
        ),
    ],
)
def test_durations_are_bounded(api: ControlPlane, manifest: str, message: str) -> None:
    """Durations the operator or the gateway compute with have a maximum the API server enforces
    (a ttl of 1,000,000,000h once passed, and overflowed the operator's date arithmetic)."""
    code, out = apply(api, manifest)
    assert code != 0, out
    assert message in out


@pytest.mark.parametrize(
    "manifest",
    [
        key("max-ttl", ttl="36500d", rotationGracePeriod="365d"),
        key(
            "mixed-units",
            ttl="876000h",
            rotationGracePeriod="8759h59m59s999ms",
            limits={"tokens": 9, "window": "1d"},
        ),
        key("fraction", ttl="0.5h", limits={"requests": 1, "window": "500ms"}),
        provider("max-timeout", timeout="24h"),
    ],
)
def test_durations_up_to_the_bound_are_accepted(api: ControlPlane, manifest: str) -> None:
    code, out = apply(api, manifest)
    assert code == 0, out


BASE_URL_REFUSED = (
    "spec.baseURL must be an http(s) URL without user info, query or fragment, e.g. https://api.openai.com/v1"
)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://u:p@host/v1",  # user info
        "http://host@evil.example/v1",
        "http://host/v1?x=1",  # query
        "http://host/v1#",  # fragment
        "ftp://host/v1",  # not http(s)
        "https:///v1",  # no host
        "https://host/v1 x",
    ],
)
def test_base_url_is_a_plain_http_url(api: ControlPlane, base_url: str) -> None:
    code, out = apply(api, provider("bad-url", base_url))
    assert code != 0, out
    assert BASE_URL_REFUSED in out


@pytest.mark.parametrize(
    "base_url",
    ["https://llm.internal.example:8443/openai/v1", "http://vllm.ai.svc:8000/v1", "https://example.com"],
)
def test_plain_base_urls_are_accepted(api: ControlPlane, base_url: str) -> None:
    code, out = apply(api, provider("good-url", base_url))
    assert code == 0, out
    got = json.loads(api.kubectl("get", "aip", "good-url", "-n", "crd-tests", "-o", "json").stdout)
    assert got["spec"]["baseURL"] == base_url


def allocation(name: str, budget: str) -> str:
    return json.dumps(
        {
            "apiVersion": "aikeys.dev/v1alpha1",
            "kind": "Allocation",
            "metadata": {"name": name},
            "spec": {"budget": budget},
        }
    )


def test_budget_maximum(api: ControlPlane) -> None:
    for budget in ("9000001", "9000000.000000001", "999999999999"):
        code, out = apply(api, allocation("too-rich", budget))
        assert code != 0, budget
        assert "spec.budget must be at most 9000000 USD" in out
    for budget in ("9000000", "9000000.000000000", "8999999.999999999"):
        code, out = apply(api, allocation("richest", budget))
        assert code == 0, out


@pytest.mark.parametrize(
    ("model", "spec", "message"),
    [
        ({"inputPricePerMillion": "1000001"}, {}, "inputPricePerMillion must be at most 1000000 USD"),
        ({"outputPricePerMillion": "1000001"}, {}, "outputPricePerMillion must be at most 1000000 USD"),
        (
            {"cachedInputPricePerMillion": "1000001"},
            {},
            "cachedInputPricePerMillion must be at most 1000000 USD",
        ),
        (
            {"cacheWritePricePerMillion": "-1"},
            {},
            'cacheWritePricePerMillion must be a USD amount like "25.00"',
        ),
        (
            {"cacheWrite1hPricePerMillion": "2x"},
            {},
            'cacheWrite1hPricePerMillion must be a USD amount like "25.00"',
        ),
        ({"maxOutputTokens": 10000001}, {}, "should be less than or equal to 10000000"),
        ({"maxOutputTokens": 0}, {}, "should be greater than or equal to 1"),
        ({"tokenizer": "gpt2"}, {}, 'Unsupported value: "gpt2"'),
        ({}, {"maxTokensParameter": "max_output_tokens"}, 'Unsupported value: "max_output_tokens"'),
    ],
)
def test_model_limits_and_enums_are_refused(
    api: ControlPlane, model: dict[str, Any], spec: dict[str, Any], message: str
) -> None:
    code, out = apply(api, provider("limits", model=model, **spec))
    assert code != 0, out
    assert message in out


@pytest.mark.parametrize(
    ("model", "spec"),
    [
        ({"inputPricePerMillion": "1000000", "outputPricePerMillion": "1000000.000000000"}, {}),
        (
            {
                "cachedInputPricePerMillion": "0.125",
                "cacheWritePricePerMillion": "1.5625",
                "cacheWrite1hPricePerMillion": "1000000",
            },
            {},
        ),
        ({"maxOutputTokens": 10000000}, {}),
        ({"tokenizer": "o200k_base"}, {}),
        ({"tokenizer": "cl100k_base"}, {}),
        ({"tokenizer": "bytes"}, {"maxTokensParameter": "max_tokens"}),
        ({"tokenizer": "auto"}, {"maxTokensParameter": "max_completion_tokens"}),
    ],
)
def test_model_limits_and_enums_are_accepted(
    api: ControlPlane, model: dict[str, Any], spec: dict[str, Any]
) -> None:
    code, out = apply(api, provider("accepted", model=model, **spec))
    assert code == 0, out
    got = json.loads(api.kubectl("get", "aip", "accepted", "-n", "crd-tests", "-o", "json").stdout)
    assert model.items() <= got["spec"]["models"][0].items()
    assert spec.items() <= got["spec"].items()


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
    key_columns = ["NAME", "ALLOCATION", "OWNER", "PHASE", "KEY", "EXPIRES", "LAST", "USED", "SPEND", "AGE"]
    assert key_columns in headers
    assert ["NAME", "BUDGET", "SPENT", "REMAINING", "PERIOD", "EXHAUSTED", "AGE"] in headers
    assert ["NAME", "TYPE", "MODELS", "SHARED", "READY", "AGE"] in headers
    short = api.kubectl("get", "aik,alloc,aip", "-n", "crd-tests", "-o", "name").stdout.split()
    assert {
        "aikey.aikeys.dev/listed",
        "allocation.aikeys.dev/research",
        "aiprovider.aikeys.dev/local",
    } <= set(short)

"""The snippet generator (aikeys.connect): chat models only, the key never in a snippet unless
given, every configuration well-formed for its tool. That the snippets work with the tools
themselves is proven in tests/clients/, which run them."""

from __future__ import annotations

import json
import shlex
import tomllib

import pytest

from aikeys import connect
from aikeys.connect import KEY_VARIABLE, Offered, Target, Tool
from aikeys.resources import ModelUse, ProviderModel, model_use

BASE = "https://ai.example.com/api/openai/v1"
HINT = "aik_Ab12…wxyz"
KEY = "aik_" + "K" * 49


def offered(*ids: str) -> list[Offered]:
    return [Offered(i, model_use(ProviderModel.model_validate(model(i))), i.split(":")[0]) for i in ids]


def model(mid: str, **extra: str) -> dict[str, str]:
    return {
        "name": mid.rsplit("/", 1)[1],
        "inputPricePerMillion": "1",
        "outputPricePerMillion": "1",
        **extra,
    }


def test_what_a_model_is_for_is_declared_or_guessed_from_its_names() -> None:
    assert model_use(ProviderModel.model_validate(model("a:b/gpt-4o"))) is ModelUse.CHAT
    for name in ("embeddings", "text-embedding-3-small", "Nomic-Embed-Text"):
        assert model_use(ProviderModel.model_validate(model(f"a:b/{name}"))) is ModelUse.EMBEDDINGS
    hidden = model("a:b/small", upstreamName="text-embedding-3-small")
    assert model_use(ProviderModel.model_validate(hidden)) is ModelUse.EMBEDDINGS
    declared = model("a:b/embedder-chat", serves="chat")
    assert model_use(ProviderModel.model_validate(declared)) is ModelUse.CHAT
    assert (
        model_use(ProviderModel.model_validate(model("a:b/bge", serves="embeddings"))) is ModelUse.EMBEDDINGS
    )


def test_chat_models_skip_embeddings_own_namespace_first() -> None:
    models = offered("demo:mock/embeddings", "demo:mock/gpt-4o-mini", "shared:big/a-model", "demo:mock/b")
    assert connect.chat_models(models, [], "demo") == [
        "demo:mock/b",
        "demo:mock/gpt-4o-mini",
        "shared:big/a-model",
    ]
    assert connect.chat_models(models, ["demo:mock/*"], "demo") == ["demo:mock/b", "demo:mock/gpt-4o-mini"]
    assert connect.chat_models(models, ["demo:mock/embeddings"], "demo") == []
    assert connect.chat_models(models, ["shared:*"], "demo") == ["shared:big/a-model"]


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://ai.example.com/api/openai/v1", True),
        ("http://ai.example.com/api/openai/v1", False),
        ("https://localhost/api/openai/v1", False),
        ("https://127.0.0.1:8443/api/openai/v1", False),
        ("https://10.200.0.2/api/openai/v1", False),
        ("https://192.168.1.4/api/openai/v1", False),
        ("https://8.8.8.8/api/openai/v1", True),
        ("https://gateway.aikeys.svc.cluster.local/api/openai/v1", False),
        ("https://ai.corp.internal/api/openai/v1", False),
        ("https://intranet/api/openai/v1", False),
    ],
)
def test_public_https(url: str, public: bool) -> None:
    assert connect.public_https(url) is public
    cursor = connect.guide(Tool.CURSOR, Target(url, ("a:b/c",)))
    assert (cursor.problem is None) is public
    if not public:
        assert url in cursor.problem  # type: ignore[operator]


def every_text(target: Target) -> str:
    return "\n".join(
        s.text + s.title + "\n".join(g.steps) for g in connect.guides(target) for s in g.snippets
    )


def test_the_key_is_never_in_a_guide_only_its_hint() -> None:
    target = Target(BASE, ("demo:mock/gpt-4o-mini",), hint=HINT, key=KEY)
    assert KEY not in every_text(target)
    assert HINT in every_text(target)
    assert {g.tool for g in connect.guides(target)} == set(Tool)
    # only the key snippet carries it, and only when given
    assert shlex.split(connect.key_snippet(target).text) == ["export", f"{KEY_VARIABLE}={KEY}"]
    placeholder = connect.key_snippet(Target(BASE, hint=HINT)).text
    assert HINT in placeholder and "aik_" not in placeholder.replace(HINT, "")


def test_each_configuration_is_well_formed_and_names_the_chat_model() -> None:
    target = Target(BASE, ("demo:mock/gpt-4o-mini", "demo:mock/other"))
    codex = tomllib.loads(connect.snippet(connect.guide(Tool.CODEX, target), "~/.codex/config.toml"))
    assert codex["model"] == "demo:mock/gpt-4o-mini" and codex["model_provider"] == "aikeys"
    assert codex["model_providers"]["aikeys"] == {
        "name": "aikeys",
        "base_url": BASE,
        "env_key": KEY_VARIABLE,
        "wire_api": "responses",
    }
    for tool, path in ((Tool.OPENCODE, "opencode.json"), (Tool.KILO_CODE, "~/.config/kilo/kilo.json")):
        config = json.loads(connect.snippet(connect.guide(tool, target), path))
        provider = config["provider"]["aikeys"]
        assert provider["options"] == {"baseURL": BASE, "apiKey": "{env:AIKEYS_API_KEY}"}
        assert list(provider["models"]) == list(target.models)
        assert config["model"] == "aikeys/demo:mock/gpt-4o-mini"
    python = connect.snippet(connect.guide(Tool.OPENAI_PYTHON, target), "hello.py")
    compile(python, "hello.py", "exec")
    assert '"demo:mock/gpt-4o-mini"' in python and f'os.environ["{KEY_VARIABLE}"]' in python
    node = connect.snippet(connect.guide(Tool.OPENAI_NODE, target), "hello.mjs")
    assert f'baseURL: "{BASE}"' in node and f"process.env.{KEY_VARIABLE}" in node
    webui = connect.guide(Tool.OPEN_WEBUI, target)
    assert f"OPENAI_API_BASE_URL={BASE}" in webui.snippets[0].text
    assert webui.snippets[-1].text.split() == list(target.models)
    cursor = connect.guide(Tool.CURSOR, target).snippets[0].text
    assert all(m in cursor for m in target.models) and BASE in cursor


def test_without_models_a_placeholder_says_what_to_fill_in() -> None:
    target = Target(BASE)
    assert connect.MODEL_PLACEHOLDER in connect.snippet(
        connect.guide(Tool.CODEX, target), "~/.codex/config.toml"
    )
    assert connect.KEY_PLACEHOLDER in connect.key_snippet(target).text

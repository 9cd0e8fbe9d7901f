"""How to connect each tool to the gateway: the exact settings and configuration files for a base
URL, the models a key may use, and where the key goes.

One source for every place that shows them — the Connect page, the page shown after creating a key,
`kubectl aikeys connect` — and for the client tests, which configure each tool from this output
(filled in with a real key), so what people copy is what the suite runs. Pure: no I/O.

The key never appears in a snippet unless the caller passes it (the created-key page, where it is
shown once anyway, and the tests): configurations read it from the environment variable
AIKEYS_API_KEY, set by `key_snippet`; elsewhere a key is named by its hint only. The model in a
snippet is one the key may use for the tool's purpose — a chat model (Codex's Responses requests
are served for every chat model, translated where the upstream speaks only chat completions),
never an embeddings model (`chat_models`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from aikeys.resources import ModelUse

KEY_VARIABLE = "AIKEYS_API_KEY"
MODEL_PLACEHOLDER = "owner:provider/model"
KEY_PLACEHOLDER = "PASTE-YOUR-KEY"
PROVIDER = "aikeys"  # the provider's name in the tools' configurations
PRIVATE_SUFFIXES = (".local", ".localhost", ".internal", ".lan", ".home.arpa", ".svc", ".cluster.local")


class Tool(StrEnum):
    """The tools people are told to use. Claude Code and the Anthropic SDKs come with the Anthropic
    surface."""

    OPEN_WEBUI = "open-webui"
    OPENCODE = "opencode"
    KILO_CODE = "kilo-code"
    CURSOR = "cursor"
    CODEX = "codex"
    OPENAI_PYTHON = "openai-python"
    OPENAI_NODE = "openai-node"


@dataclass(frozen=True)
class Offered:
    """A model the gateway serves (`owner:provider/model`), what it is for, and its provider's
    namespace."""

    id: str
    use: ModelUse
    namespace: str


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


def chat_models(offered: Iterable[Offered], patterns: Sequence[str], namespace: str) -> list[str]:
    """The chat models a key of `namespace` with these model patterns may use (no pattern: every
    model offered), those of its own namespace first, then by ID. `offered` holds the models
    shared with the namespace."""
    globs = [_glob(p) for p in patterns]
    found = {
        o.id: o.namespace
        for o in offered
        if o.use is ModelUse.CHAT and (not globs or any(g.match(o.id) for g in globs))
    }
    return sorted(found, key=lambda mid: (found[mid] != namespace, mid))


def public_https(url: str) -> bool:
    """Could a service on the internet (Cursor's servers) reach this URL over HTTPS? No for http,
    loopback, private or link-local addresses and names that only resolve inside a network."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host or host == "localhost" or "." not in host:
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return not host.endswith(PRIVATE_SUFFIXES)


@dataclass(frozen=True)
class Target:
    """What a snippet connects to: the gateway's OpenAI base URL (…/api/openai/v1), the models to
    name (the first is the default), and which key: its hint, or the key itself where it is shown
    anyway."""

    base_url: str
    models: tuple[str, ...] = ()
    hint: str | None = None
    key: str | None = None

    @property
    def model(self) -> str:
        return self.models[0] if self.models else MODEL_PLACEHOLDER

    @property
    def which_key(self) -> str:
        return f"your key {self.hint}" if self.hint else "your AI key (aik_…)"


@dataclass(frozen=True)
class Snippet:
    """A block to copy: what it is (and where it goes), its text, the file it is (if one)."""

    title: str
    text: str
    path: str | None = None
    language: str = "text"


@dataclass(frozen=True)
class Guide:
    """One tool's setup: the API it uses, what it needs of the gateway, the steps and snippets,
    and `problem` when these settings cannot work for this gateway."""

    tool: Tool
    name: str
    endpoint: str
    needs: str
    steps: tuple[str, ...]
    snippets: tuple[Snippet, ...]
    problem: str | None = None


def key_snippet(target: Target) -> Snippet:
    """The key in the environment variable every configuration here reads."""
    if target.key is not None:
        text = f"export {KEY_VARIABLE}={shlex.quote(target.key)}"
    else:
        text = (
            f"# {target.which_key}, as shown once when it was created\n"
            f"export {KEY_VARIABLE}={KEY_PLACEHOLDER}"
        )
    return Snippet("Your key, in the environment (shell)", text, language="shell")


def _q(value: str) -> str:
    """A string literal for Python, JavaScript, TOML and JSON alike."""
    return json.dumps(value)


def _others(target: Target, prefix: str) -> str:
    rest = target.models[1:]
    return f"{prefix} other models this key may use: {', '.join(rest)}\n" if rest else ""


def _openai_env(target: Target) -> Snippet:
    text = f'export OPENAI_BASE_URL={shlex.quote(target.base_url)}\nexport OPENAI_API_KEY="${KEY_VARIABLE}"'
    return Snippet("Or the SDKs' own variables (no base URL or key in the code)", text, language="shell")


def _openai_python(target: Target) -> Guide:
    code = (
        "import os\n\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url={_q(target.base_url)}, api_key=os.environ["{KEY_VARIABLE}"])\n'
        "reply = client.chat.completions.create(\n"
        f"    model={_q(target.model)},\n"
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )
    return Guide(
        Tool.OPENAI_PYTHON,
        "OpenAI Python SDK",
        "every endpoint the SDK calls: chat completions, Responses, embeddings, models",
        "Python 3.8+ and a network path to the base URL.",
        ("`pip install openai`", f"Set `{KEY_VARIABLE}` (above), then run `python hello.py`:"),
        (Snippet("hello.py", code, "hello.py", "python"), _openai_env(target)),
    )


def _openai_node(target: Target) -> Guide:
    code = (
        'import OpenAI from "openai";\n\n'
        f"const client = new OpenAI({{ baseURL: {_q(target.base_url)}, "
        f"apiKey: process.env.{KEY_VARIABLE} }});\n"
        "const reply = await client.chat.completions.create({\n"
        f"  model: {_q(target.model)},\n"
        '  messages: [{ role: "user", content: "Hello" }],\n'
        "});\n"
        "console.log(reply.choices[0].message.content);\n"
    )
    return Guide(
        Tool.OPENAI_NODE,
        "OpenAI Node SDK",
        "every endpoint the SDK calls: chat completions, Responses, embeddings, models",
        "Node.js 20+ and a network path to the base URL.",
        ("`npm install openai`", f"Set `{KEY_VARIABLE}` (above), then run `node hello.mjs`:"),
        (Snippet("hello.mjs", code, "hello.mjs", "javascript"), _openai_env(target)),
    )


def _codex(target: Target) -> Guide:
    config = (
        f'model_provider = "{PROVIDER}"\n'
        f"model = {_q(target.model)}\n"
        f"{_others(target, '#')}\n"
        f"[model_providers.{PROVIDER}]\n"
        f'name = "{PROVIDER}"\n'
        f"base_url = {_q(target.base_url)}\n"
        f'env_key = "{KEY_VARIABLE}"\n'
        'wire_api = "responses"\n'
    )
    return Guide(
        Tool.CODEX,
        "Codex CLI",
        "the Responses API, streamed (translated to chat completions for chat-only models)",
        "a network path to the base URL; any chat model (the gateway serves the Responses API for each).",
        (
            "`npm install -g @openai/codex`",
            "Put this in `~/.codex/config.toml` (or merge it into yours):",
            f"Run `codex` with `{KEY_VARIABLE}` set (above).",
        ),
        (Snippet("~/.codex/config.toml", config, "~/.codex/config.toml", "toml"),),
    )


def _opencode_config(target: Target, extra: dict[str, object]) -> str:
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": PROVIDER,
        "options": {"baseURL": target.base_url, "apiKey": f"{{env:{KEY_VARIABLE}}}"},
        "models": {m: {"name": m} for m in (target.models or (MODEL_PLACEHOLDER,))},
    }
    body = {**extra, "provider": {PROVIDER: provider}, "model": f"{PROVIDER}/{target.model}"}
    return json.dumps(body, indent=2) + "\n"


def _opencode(target: Target) -> Guide:
    config = _opencode_config(target, {"$schema": "https://opencode.ai/config.json"})
    return Guide(
        Tool.OPENCODE,
        "OpenCode",
        "chat completions, streamed, with tools",
        "a network path to the base URL.",
        (
            "`npm install -g opencode-ai`",
            "Put this in `opencode.json` in your project, or in `~/.config/opencode/opencode.json`:",
            f"Run `opencode` with `{KEY_VARIABLE}` set (above); `/models` lists the models below.",
        ),
        (Snippet("opencode.json", config, "opencode.json", "json"),),
    )


def _kilo_code(target: Target) -> Guide:
    config = _opencode_config(target, {"enabled_providers": [PROVIDER]})
    settings = (
        "API Provider:  OpenAI Compatible\n"
        f"Base URL:      {target.base_url}\n"
        f"API Key:       {target.which_key}\n"
        f"Model:         {target.model}\n"
    )
    return Guide(
        Tool.KILO_CODE,
        "Kilo Code",
        "chat completions, streamed, with tools",
        "a network path to the base URL.",
        (
            "In VS Code: Kilo Code's settings, Providers: these values.",
            "The CLI (`npm install -g @kilocode/cli`): put this in `~/.config/kilo/kilo.json` (or pass "
            f"it in the variable `KILO_CONFIG_CONTENT`), and run `kilo` with `{KEY_VARIABLE}` set (above).",
        ),
        (
            Snippet("VS Code extension settings", settings),
            Snippet("~/.config/kilo/kilo.json", config, "~/.config/kilo/kilo.json", "json"),
        ),
    )


def _open_webui(target: Target) -> Guide:
    env = (
        f"export OPENAI_API_BASE_URL={shlex.quote(target.base_url)}\n"
        f'export OPENAI_API_KEY="${KEY_VARIABLE}"\n'
        "export ENABLE_OLLAMA_API=false\n"
        "open-webui serve\n"
    )
    settings = f"URL:  {target.base_url}\nKey:  {target.which_key}\n"
    models = "\n".join(target.models) or MODEL_PLACEHOLDER
    return Guide(
        Tool.OPEN_WEBUI,
        "Open WebUI",
        "`GET /models` (its model menu), chat completions streamed and not",
        "a network path from the Open WebUI server (not the browser) to the base URL.",
        (
            "Start Open WebUI with these variables (`docker run` takes the same with `-e`):",
            "Or, in a running Open WebUI: Admin Panel, Settings, Connections, OpenAI API: add these.",
            "Its model menu lists exactly the models the key may use:",
        ),
        (
            Snippet("Server environment (shell)", env, language="shell"),
            Snippet("Admin Panel connection", settings),
            Snippet("Models", models + "\n"),
        ),
    )


def _cursor(target: Target) -> Guide:
    models = ("\n" + " " * 26).join(target.models) or MODEL_PLACEHOLDER
    settings = (
        f"OpenAI API Key:           {target.which_key}\n"
        f"Override OpenAI Base URL: {target.base_url}\n"
        f"Custom models:            {models}\n"
    )
    problem = None
    if not public_https(target.base_url):
        problem = (
            f"This gateway's URL ({target.base_url}) is not a public HTTPS address, so Cursor cannot "
            "reach it: Cursor needs the gateway on the internet over HTTPS (ask for a public URL, "
            "the chart's gateway.publicURL behind an Ingress with TLS)."
        )
    return Guide(
        Tool.CURSOR,
        "Cursor",
        "chat completions, streamed, sent from Cursor's own servers",
        "a public HTTPS URL: Cursor calls a custom base URL from its servers, never from your "
        "machine, and refuses private addresses.",
        (
            "Cursor Settings, Models, API Keys: turn on OpenAI API Key and paste your key; turn on "
            "Override OpenAI Base URL and enter the URL below.",
            "Add each model below as a custom model, then pick it in the chat.",
        ),
        (Snippet("Cursor settings", settings),),
        problem,
    )


BUILDERS = {
    Tool.OPEN_WEBUI: _open_webui,
    Tool.OPENCODE: _opencode,
    Tool.KILO_CODE: _kilo_code,
    Tool.CURSOR: _cursor,
    Tool.CODEX: _codex,
    Tool.OPENAI_PYTHON: _openai_python,
    Tool.OPENAI_NODE: _openai_node,
}


def guide(tool: Tool, target: Target) -> Guide:
    return BUILDERS[tool](target)


def guides(target: Target) -> list[Guide]:
    """Every tool's guide, in the order the pages show them."""
    return [guide(tool, target) for tool in Tool]


def snippet(found: Guide, path: str) -> str:
    """The text of a guide's snippet by its file path (what the client tests write)."""
    for s in found.snippets:
        if s.path == path:
            return s.text
    raise KeyError(f"{found.name} has no snippet {path}")

"""`aikeys connect TOOL`: how to point a tool at the gateway, for people who never open the pages.

The same guide as the Connect page (`aikeys.connect`, the snippets the client tests run), for the
current context: the chat models your own keys in the namespace may use (or `--key NAME`'s), and
the gateway's public base URL from `--base-url`, the key's Secret, its status (`baseURL`, written
when the key was minted), or AIKEYS_GATEWAY_URL (the local stacks' env files set it). The key
itself is never printed: the snippets read it from AIKEYS_API_KEY.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import click
import pydantic

from aikeys import connect
from aikeys.cli.context import Context, aikeys_path
from aikeys.cli.keys import whoami
from aikeys.connect import Guide, Offered, Target, Tool
from aikeys.kube.client import Forbidden, KubeClient, NotFound, path, resource_path
from aikeys.resources import AIProviderSpec, ModelUse, model_use, parse_model_id, use_by_name

pass_ctx = click.make_pass_decorator(Context)
PLACEHOLDER_URL = "https://GATEWAY-HOST/api/openai/v1"
TOOLS = "\n".join(f"  {tool.value:<15} {connect.guide(tool, Target('')).name}" for tool in Tool)


async def _offered(client: KubeClient, namespace: str) -> list[Offered] | None:
    """The models shared with the namespace, from the AIProviders you may list (cluster-wide, else
    the namespace's); None when you may list none."""
    items: list[dict[str, Any]] | None = None
    for where in (None, namespace):
        try:
            items = (await client.get(resource_path("aiproviders", where))).get("items", [])
            break
        except Forbidden:
            continue
    if items is None:
        return None
    found = []
    for obj in items:
        meta = obj["metadata"]
        try:
            spec = AIProviderSpec.model_validate(obj.get("spec") or {})
        except pydantic.ValidationError:
            continue
        if meta["namespace"] == namespace or {"*", namespace} & set(spec.shared_with):
            for m in spec.models:
                mid = f"{meta['namespace']}:{meta['name']}/{m.name}"
                found.append(Offered(mid, model_use(m), meta["namespace"]))
    return found


async def _secret_url(client: KubeClient, namespace: str, key: dict[str, Any]) -> str | None:
    secret = (key.get("status") or {}).get("secretName")
    if not secret:
        return None
    try:
        data = (await client.get(path("v1", "secrets", namespace, secret))).get("data") or {}
    except (NotFound, Forbidden):
        return None
    return base64.b64decode(data["OPENAI_BASE_URL"]).decode() if "OPENAI_BASE_URL" in data else None


async def target_for(
    client: KubeClient, namespace: str, key_name: str | None, base_url: str | None
) -> tuple[Target, list[str]]:
    """The Connect page's target for this context, and notes for the person (on stderr)."""
    notes: list[str] = []
    if key_name:
        picked = [await client.get(aikeys_path(namespace, key_name))]
    else:
        me = await whoami(client)
        items: list[dict[str, Any]] | None = None
        try:
            items = (await client.get(aikeys_path(namespace))).get("items", [])
        except Forbidden:
            notes.append(f"You may not list keys in namespace {namespace}: pass --key NAME for one of yours.")
        picked = [k for k in items or [] if me and (k.get("spec") or {}).get("owner") == me]
        if items is not None and not picked:
            notes.append(
                f"You have no key in namespace {namespace}: create one with `kubectl aikeys keys create`. "
                "These are the models the namespace can reach."
            )
    specs = [k.get("spec") or {} for k in picked]
    patterns = [] if any(not s.get("models") for s in specs) else [m for s in specs for m in s["models"]]
    offered = await _offered(client, namespace)
    if offered is not None:
        models = connect.chat_models(offered, patterns, namespace)
    else:  # no provider readable: the key's own model IDs, judged by their names
        models = [
            p
            for p in patterns
            if "*" not in p and (parsed := parse_model_id(p)) and use_by_name(parsed[2]) is ModelUse.CHAT
        ]
        notes.append("You may not list AIProviders here: the models are your keys' own model IDs.")
    url = base_url
    if not url and key_name:
        url = await _secret_url(client, namespace, picked[0])
    for key in picked:
        url = url or (key.get("status") or {}).get("baseURL")
    url = url or os.environ.get("AIKEYS_GATEWAY_URL")
    if not url:
        url = PLACEHOLDER_URL
        notes.append(
            "The gateway's URL is not known here: pass --base-url (ask your platform team for the "
            "gateway's OpenAI base URL)."
        )
    hint = (picked[0].get("status") or {}).get("keyHint") if len(picked) == 1 else None
    return Target(url.rstrip("/"), tuple(models), hint), notes


def render(guide: Guide, target: Target) -> str:
    """A guide as plain text: what the tool uses and needs, its models, the key's variable, the
    steps, the snippets (styles reach a terminal only)."""
    lines = [click.style(f"{guide.name}: {guide.endpoint}", bold=True), f"Needs {guide.needs}"]
    if guide.problem:
        lines.append(click.style(f"Warning: {guide.problem}", fg="yellow"))
    lines.append("Chat models: " + (", ".join(target.models) or "none yet"))

    def block(snippet: connect.Snippet) -> list[str]:
        return ["", click.style(f"{snippet.title}:", bold=True), "", snippet.text.rstrip("\n")]

    lines += [*block(connect.key_snippet(target)), ""]  # the snippets' "(above)"
    lines += [f"{i}. {step}" for i, step in enumerate(guide.steps, 1)]
    for snippet in guide.snippets:
        lines += block(snippet)
    return "\n".join(lines)


@click.command(
    "connect",
    short_help="Print how to point a tool (Codex, OpenCode, Cursor, …) at the gateway.",
    help="Print how to connect TOOL to the gateway: the settings and configuration files for the "
    "current context — the gateway's base URL, the chat models your keys in the namespace may use "
    "(--key: that key's), and where the key goes (the variable AIKEYS_API_KEY; the key itself is "
    "never printed). The same as the web pages' Connect page.\n\n\b\nTOOL is one of:\n" + TOOLS,
)
@click.argument("tool", type=click.Choice([t.value for t in Tool]), metavar="TOOL")
@click.option(
    "--key", "key_name", help="Use this key's models (and its base URL): an AIKey in the namespace."
)
@click.option("--base-url", help="The gateway's OpenAI base URL (default: the key's, or AIKEYS_GATEWAY_URL).")
@pass_ctx
def connect_command(ctx: Context, tool: str, key_name: str | None, base_url: str | None) -> None:
    ns = ctx.ns()

    async def go(client: KubeClient) -> tuple[Target, list[str]]:
        return await target_for(client, ns, key_name, base_url)

    target, notes = ctx.run(go)
    for note in notes:
        click.echo(note, err=True)
    click.echo(render(connect.guide(Tool(tool), target), target))

# ruff: noqa: E501 - markup reads better on its own lines than wrapped at 110 columns
"""The pages that tell a person how to use a key: Connect (every tool's settings for this gateway,
the signed-in person's models, the key named by its hint) and the page that shows a new key once,
with the same sections under "Use it".

Both render `aikeys.connect`'s guides, the one source of the snippets that the client tests run,
so what a page offers to copy is what the suite proved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aikeys.connect import Guide, Snippet, Target, guides, key_snippet
from aikeys_gateway.ui.pages import Viewer, e, layout, namespace_picker, notice, url, when


def snippet_block(snippet: Snippet, ident: str) -> str:
    return (
        f'<figure class="snippet"><figcaption id="{ident}-title">{e(snippet.title)}</figcaption>'
        f'<pre id="{ident}" aria-labelledby="{ident}-title"><code>{e(snippet.text)}</code></pre>'
        f'<button type="button" data-copy="{ident}" aria-label="Copy {e(snippet.title)}">Copy</button></figure>'
    )


def prose(text: str) -> str:
    """Plain text with `backticked` commands and paths as <code>."""
    return "".join(f"<code>{e(part)}</code>" if i % 2 else e(part) for i, part in enumerate(text.split("`")))


def guide_section(guide: Guide, collapsed: bool) -> str:
    """One tool: the API it uses, what it needs, the steps, the snippets (in a <details> when
    `collapsed`)."""
    tool = guide.tool.value
    steps = "".join(f"<li>{prose(step)}</li>" for step in guide.steps)
    snippets = "".join(snippet_block(s, f"{tool}-{i}") for i, s in enumerate(guide.snippets))
    facts = (
        f'<p class="facts"><strong>Uses</strong> {prose(guide.endpoint)}. <strong>Needs</strong> {prose(guide.needs)}</p>'
        f'{notice(guide.problem, "warn")}<ol class="steps">{steps}</ol>{snippets}'
    )
    if collapsed:
        return f'<details class="tool card" id="tool-{tool}"><summary><h3>{e(guide.name)}</h3></summary>{facts}</details>'
    return f'<section class="tool card" id="tool-{tool}" aria-labelledby="h-{tool}"><h2 id="h-{tool}">{e(guide.name)}</h2>{facts}</section>'


def usage_sections(target: Target, collapsed: bool) -> str:
    """The key in the environment, then every tool's section."""
    key = snippet_block(key_snippet(target), "key-env")
    return key + "".join(guide_section(g, collapsed) for g in guides(target))


@dataclass(frozen=True)
class ConnectView:
    """What the Connect page shows: for whom (namespace, the person's own keys as (name, hint),
    the one chosen or "" for all of them), and the target the snippets are for."""

    namespace: str
    namespaces: Sequence[str]
    keys: Sequence[tuple[str, str | None]]
    chosen: str
    target: Target
    note: str | None = None
    error: str | None = None
    by_key: bool = False  # signed in with an AI key: that key, no pickers


def _key_picker(view: ConnectView) -> str:
    options = '<option value="">All my keys</option>' + "".join(
        f'<option value="{e(name)}"{" selected" if name == view.chosen else ""}>{e(name)}{f" ({e(hint)})" if hint else ""}</option>'
        for name, hint in view.keys
    )
    return (
        '<form class="picker" method="get" action="/ui/connect">'
        f'<input type="hidden" name="namespace" value="{e(view.namespace)}">'
        '<label for="key">Key</label>'
        f'<select id="key" name="key" data-autosubmit>{options}</select>'
        '<button type="submit">Show</button></form>'
    )


def connect_page(viewer: Viewer, view: ConnectView) -> str:
    target = view.target
    pickers = ""
    if not view.by_key:
        pickers = namespace_picker("/ui/connect", view.namespaces, view.namespace, {}, False)
        if view.keys:
            pickers += _key_picker(view)
    models = (
        "".join(f"<li><code>{e(m)}</code></li>" for m in target.models)
        or '<li class="none">no chat model yet: ask for one, or for a key that may use one</li>'
    )
    toc = "".join(f'<li><a href="#tool-{g.tool.value}">{e(g.name)}</a></li>' for g in guides(target))
    body = f"""
<h1>Connect</h1>
<p>Settings for this gateway and {"this key" if view.by_key else "your keys"}: every tool below talks to
the OpenAI-compatible API at <code id="base-url">{e(target.base_url)}</code>
<button type="button" data-copy="base-url">Copy</button></p>
{pickers}{notice(view.error)}{notice(view.note, "info")}
<section class="card" aria-labelledby="models-title"><h2 id="models-title">Chat models {"this key" if view.by_key or view.chosen else "your keys"} may use</h2>
<ul id="models" class="models">{models}</ul>
<p class="help">The key itself is never shown here: it was shown once, when it was created. Each
tool reads it from the variable below{f", and this is {e(target.which_key)}" if target.hint else ""}.
Lost it? Rotate the key on <a href="{e(url("/ui/keys", namespace=view.namespace))}">AI Keys</a>.</p>
</section>
<nav class="toc" aria-label="Tools"><ul>{toc}</ul></nav>
<p class="copied" role="status" aria-live="polite"></p>
{usage_sections(target, collapsed=False)}"""
    return layout("Connect", body, viewer, "connect")


@dataclass(frozen=True)
class NewKey:
    namespace: str
    name: str
    key: str
    target: Target  # with the key in it: the environment snippet carries it, nothing else
    previous_valid_until: str | None = None
    rotated: bool = False


def new_key_page(viewer: Viewer, new: NewKey) -> str:
    grace = (
        f"<p>The previous key keeps working until {when(new.previous_valid_until)} UTC.</p>"
        if new.previous_valid_until
        else ""
    )
    heading = "Key rotated" if new.rotated else "Key created"
    body = f"""
<h1>{heading}: {e(new.namespace)}/{e(new.name)}</h1>
<section class="card once" aria-labelledby="once-title">
<h2 id="once-title">Copy your key now — it is shown only once</h2>
<p>Only its SHA-256 is kept; nobody, this page included, can show it again. Reloading this page will
not show it either.</p>
<div class="secret"><code id="new-key">{e(new.key)}</code>
<button type="button" class="primary" data-copy="new-key">Copy key</button></div>
<p>Base URL <code id="base-url">{e(new.target.base_url)}</code>
<button type="button" data-copy="base-url">Copy</button></p>
{grace}
<p class="copied" role="status" aria-live="polite"></p>
</section>
<h2>Use it</h2>
<p>Put the key in the environment, then set up your tool (the same settings are on
<a href="{e(url("/ui/connect", namespace=new.namespace, key=new.name))}">Connect</a>, without the key).</p>
{usage_sections(new.target, collapsed=True)}
<p><a class="button" href="{e(url("/ui/keys", namespace=new.namespace))}">Done — back to AI Keys</a></p>"""
    return layout(heading, body, viewer, "keys")

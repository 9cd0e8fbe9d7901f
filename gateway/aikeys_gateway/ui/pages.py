# ruff: noqa: E501 - markup reads better on its own lines than wrapped at 110 columns
"""The HTML of the web pages: plain server-rendered markup, every value escaped here.

No template engine and no framework: a layout, a few components, the AI Keys and AI Usage pages and
sign-in (the Connect page and the page that shows a new key once are in `connecting.py`). Charts are
inline SVG (no script, no style attributes, so the Content-Security-Policy stays strict). Assets ship
in the package (static/).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aikeys_gateway.usage.records import Amounts, UsageReport

PERIODS = (7, 30, 90)
CURRENT_PAGE = ' aria-current="page"'
CURRENT = ' aria-current="true" class="on"'
GROUPINGS = (("model", "Model"), ("key", "Key"), ("allocation", "Allocation"), ("owner", "Owner"))
TTLS = (
    ("30d", "30 days"),
    ("7d", "7 days"),
    ("1d", "1 day"),
    ("90d", "90 days"),
    ("365d", "1 year"),
    ("", "Never"),
)


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, **query: object) -> str:
    params = {k: str(v) for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(params) if params else "")


def _moment(value: str | dt.datetime) -> dt.datetime:
    moment = (
        value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    )
    return moment.astimezone(dt.UTC)


def when(value: str | dt.datetime | None, *, day_only: bool = False) -> str:
    """An API timestamp as `2026-03-14 09:30` (or the day) UTC in a <time> element; "—" when unset."""
    if not value:
        return '<span class="none">—</span>'
    moment = _moment(value)
    full = moment.strftime("%Y-%m-%d %H:%M UTC")
    shown = moment.strftime("%Y-%m-%d") if day_only else full.removesuffix(" UTC")
    return f'<time datetime="{e(moment.isoformat())}" title="{e(full)}">{e(shown)}</time>'


def ago(value: str | dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago, as kubectl says it (45s, 12m, 5h, 3d); the moment in the title."""
    if not value:
        return '<span class="none">never</span>'
    moment = _moment(value)
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - moment).total_seconds()))
    shown = f"{seconds}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            shown = f"{seconds // size}{unit}"
            break
    full = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{e(moment.isoformat())}" title="{e(full)}">{e(shown)} ago</time>'


def _opt_moment(value: object) -> dt.datetime | None:
    return _moment(value) if isinstance(value, str | dt.datetime) and value else None


def short_usd(value: Decimal) -> str:
    """Cents from 1 USD up, 4 decimals from a cent, else 2 significant digits: 12.50, 0.0425, 0.000063."""
    if value == 0 or abs(value) >= 1:
        return f"{value:,.2f}"
    if abs(value) >= Decimal("0.01"):
        return f"{value:.4f}"
    return f"{value:.{max(2, 1 - value.adjusted())}f}"


def usd(amount: str | None) -> str:
    """A USD string as the API has it, shortened for reading; the exact value in the title."""
    if amount is None:
        return '<span class="none">—</span>'
    return f'<span class="usd" title="{e(amount)} USD">{e(short_usd(Decimal(amount)))}</span>'


def number(value: int) -> str:
    return f"{value:,}"


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page, for the header."""

    user: str
    is_key: bool
    csrf: str


def layout(title: str, body: str, viewer: Viewer | None, active: str = "") -> str:
    nav = ""
    if viewer is not None:
        links = [
            ("keys", "/ui/keys", "AI Keys"),
            ("usage", "/ui/usage", "AI Usage"),
            ("connect", "/ui/connect", "Connect"),
        ]
        items = "".join(
            f'<li><a href="{href}"{CURRENT_PAGE if name == active else ""}>{label}</a></li>'
            for name, href, label in links
        )
        who = "AI key" if viewer.is_key else "Signed in as"
        nav = (
            f'<nav aria-label="Main"><ul>{items}</ul></nav>'
            f'<div class="who"><span>{who} <strong>{e(viewer.user)}</strong></span>'
            f'<form method="post" action="/ui/logout">{csrf_field(viewer.csrf)}'
            '<button type="submit" class="link">Sign out</button></form></div>'
        )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · aikeys</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/static/aikeys.css">'
        '<script src="/ui/static/aikeys.js" defer></script></head>'
        '<body><a class="skip" href="#main">Skip to content</a>'
        f'<header><a class="brand" href="/ui/">aikeys</a>{nav}</header>'
        f'<main id="main">{body}</main></body></html>'
    )


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def notice(message: str | None, kind: str = "error") -> str:
    if not message:
        return ""
    role = "alert" if kind == "error" else "status"
    return f'<p class="notice {kind}" role="{role}">{e(message)}</p>'


# --- sign-in ------------------------------------------------------------------------------------


def login(csrf: str, error: str | None = None) -> str:
    body = f"""
<section class="card narrow">
<h1>Sign in</h1>
{notice(error)}
<form method="post" action="/ui/login" autocomplete="off">
{csrf_field(csrf)}
<label for="credential">Kubernetes token or AI key</label>
<input id="credential" name="credential" type="password" required autofocus spellcheck="false"
 aria-describedby="credential-help">
<p id="credential-help" class="help">A bearer token the cluster accepts — e.g. from
<code>kubectl create token NAME</code> or your OIDC login — to manage keys and read usage with your own
permissions; or an AI key (<code>aik_…</code>) to see that key's usage and budget. It stays in an
encrypted, HttpOnly session cookie of this browser; nothing is stored on the server.</p>
<button type="submit" class="primary">Sign in</button>
</form>
</section>"""
    return layout("Sign in", body, None)


# --- AI Keys ------------------------------------------------------------------------------------


def namespace_picker(
    action: str, namespaces: Sequence[str], current: str, extra: dict[str, str], all_ok: bool
) -> str:
    options = "".join(
        f'<option value="{e(ns)}"{" selected" if ns == current else ""}>{e(ns)}</option>' for ns in namespaces
    )
    if all_ok:
        options = (
            f'<option value="*"{" selected" if current == "*" else ""}>All namespaces</option>' + options
        )
    if current and current != "*" and current not in namespaces:
        options += f'<option value="{e(current)}" selected>{e(current)}</option>'
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in extra.items() if v)
    return (
        f'<form class="picker" method="get" action="{action}">{hidden}'
        '<label for="namespace">Namespace</label>'
        f'<select id="namespace" name="namespace" data-autosubmit>{options}</select>'
        '<button type="submit">Show</button></form>'
    )


def _key_row(
    obj: dict[str, object], ns: str, csrf: str, can_act: bool, uses: Mapping[str, dt.datetime], everyone: bool
) -> str:
    """`uses`: the ledger's last use of each key, by AIKey uid; `can_act`: the person may disable,
    rotate and revoke it (the admission policy decides anyway); `everyone`: the namespace's keys
    are shown, not only the person's (the actions come back to that view)."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    assert isinstance(meta, dict) and isinstance(spec, dict) and isinstance(status, dict)
    last_used = uses.get(str(meta.get("uid")))
    name = str(meta["name"])
    alloc = (spec.get("allocationRef") or {}).get("name", "")
    phase = status.get("phase") or "Pending"
    owner = spec.get("owner")
    search = " ".join(
        str(x)
        for x in (name, owner or "", alloc, status.get("keyHint") or "", spec.get("description") or "", phase)
    ).lower()
    actions = ""
    if can_act:
        toggle = "enable" if spec.get("disabled") else "disable"
        actions = (
            f"{_action(ns, name, toggle, toggle.capitalize(), csrf, everyone)}"
            f"{_action(ns, name, 'rotate', 'Rotate', csrf, everyone, confirm=f'Rotate {name}? A new key is shown once; the old one keeps working for its grace period.')}"
            f"{_action(ns, name, 'revoke', 'Revoke', csrf, everyone, confirm=f'Revoke {name}? The key stops working at once. This cannot be undone.', danger=True)}"
        )
    description = spec.get("description")
    seen = max((t for t in (last_used, _opt_moment(status.get("lastUsedAt"))) if t), default=None)
    return (
        f'<tr data-search="{e(search)}">'
        f'<th scope="row"><span class="name">{e(name)}</span>'
        f"{f'<small>{e(description)}</small>' if description else ''}</th>"
        f"<td>{e(owner) if owner else '<span class=none>—</span>'}</td>"
        f"<td><code>{e(status.get('keyHint') or '—')}</code></td>"
        f"<td>{e(alloc)}</td>"
        f"<td>{when(status.get('createdAt') or meta.get('creationTimestamp'), day_only=True)}</td>"
        f"<td>{when(status.get('expiresAt'), day_only=True) if status.get('expiresAt') else 'never'}</td>"
        f"<td>{ago(seen)}</td>"
        f'<td class="num">{usd(status.get("spend") or "0")}</td>'
        f'<td><span class="phase {e(str(phase).lower())}">{e(phase)}</span></td>'
        f'<td class="actions">{actions}</td></tr>'
    )


def _action(
    ns: str,
    name: str,
    verb: str,
    label: str,
    csrf: str,
    everyone: bool,
    confirm: str = "",
    danger: bool = False,
) -> str:
    confirm_attr = f' data-confirm="{e(confirm)}"' if confirm else ""
    return (
        f'<form method="post" action="/ui/keys/{verb}"{confirm_attr}>{csrf_field(csrf)}'
        f'<input type="hidden" name="namespace" value="{e(ns)}"><input type="hidden" name="name" value="{e(name)}">'
        f"{'<input type=hidden name=all value=1>' if everyone else ''}"
        f"{'<input type=hidden name=confirm value=no>' if confirm else ''}"
        f'<button type="submit" class="{"danger" if danger else ""}" aria-label="{e(label)} {e(name)}">{e(label)}</button></form>'
    )


@dataclass(frozen=True)
class KeysView:
    """Whose keys the AI Keys page shows: the person's own (`everyone` False) or the namespace's,
    how many each, and whether the person holds the owner exception (may act on others' keys)."""

    everyone: bool = False
    mine: int = 0
    total: int = 0
    exception: bool = False


def _whose(namespace: str, view: KeysView) -> str:
    links = (
        (False, f"My keys ({view.mine})"),
        (True, f"All keys in {namespace} ({view.total})"),
    )
    return (
        '<nav class="segmented" aria-label="Whose keys">'
        + "".join(
            f'<a href="{e(url("/ui/keys", namespace=namespace, all="1" if everyone else None))}"'
            f"{CURRENT if everyone == view.everyone else ''}>{e(label)}</a>"
            for everyone, label in links
        )
        + "</nav>"
    )


def keys_page(
    viewer: Viewer,
    namespace: str,
    namespaces: Sequence[str],
    keys: Sequence[dict[str, object]],
    allocations: Sequence[str],
    last_used: Mapping[str, dt.datetime],
    query: str = "",
    message: str | None = None,
    error: str | None = None,
    view: KeysView | None = None,
) -> str:
    """`keys`: those `view` says (the person's own by default); Disable, Rotate and Revoke only on
    the person's own keys, or on every key for holders of the owner exception."""
    view = view or KeysView(everyone=True, total=len(keys), exception=True)
    q = query.lower().strip()
    rows = [k for k in keys if not q or q in _search_text(k)]

    def may_act(obj: dict[str, object]) -> bool:
        spec = obj.get("spec") or {}
        return view.exception or (isinstance(spec, dict) and spec.get("owner") == viewer.user)

    body_rows = "".join(
        _key_row(k, namespace, viewer.csrf, may_act(k), last_used, view.everyone) for k in rows
    )
    if not keys:
        whose = "No keys" if view.everyone else "You have no keys"
        body_rows = f'<tr class="empty"><td colspan="10">{whose} in {e(namespace)} yet.</td></tr>'
    elif not rows:
        body_rows = '<tr class="empty"><td colspan="10">No key matches the filter.</td></tr>'
    alloc_options = "".join(f'<option value="{e(a)}">{e(a)}</option>' for a in allocations)
    ttl_options = "".join(f'<option value="{e(v)}">{e(label)}</option>' for v, label in TTLS)
    create = f"""
<details class="card create"{" open" if not keys else ""}>
<summary>Create key</summary>
<form method="post" action="/ui/keys/create" class="grid">
{csrf_field(viewer.csrf)}<input type="hidden" name="namespace" value="{e(namespace)}">
<div><label for="new-name">Name</label>
<input id="new-name" name="name" required maxlength="63" pattern="[a-z0-9]([a-z0-9\\-]*[a-z0-9])?"
 aria-describedby="new-name-help" spellcheck="false">
<p id="new-name-help" class="help">Lower-case letters, digits and dashes.</p></div>
<div><label for="new-allocation">Allocation</label>
<select id="new-allocation" name="allocation" required>{alloc_options}</select></div>
<div><label for="new-ttl">Expires after</label><select id="new-ttl" name="ttl">{ttl_options}</select></div>
<div><label for="new-expires">…or on (UTC)</label><input id="new-expires" name="expires_at" type="date"></div>
<div class="wide"><label for="new-models">Models</label>
<input id="new-models" name="models" placeholder="{e(namespace)}:provider/* (empty: every model)" spellcheck="false"
 aria-describedby="new-models-help">
<p id="new-models-help" class="help">Comma-separated model IDs; <code>*</code> matches anything.</p></div>
<div class="wide"><label for="new-description">Description</label>
<input id="new-description" name="description" maxlength="1024" placeholder="Who or what the key is for"></div>
<div class="wide"><button type="submit" class="primary">Create key</button>
<span class="help">Owned by <strong>{e(viewer.user)}</strong>. The key is shown once.</span></div>
</form></details>"""
    body = f"""
<h1>AI Keys</h1>
{notice(message, "ok")}{notice(error)}
{namespace_picker("/ui/keys", namespaces, namespace, {}, False)}
{create}
{_whose(namespace, view)}
<form class="filter" method="get" action="/ui/keys" role="search">
<input type="hidden" name="namespace" value="{e(namespace)}">{'<input type="hidden" name="all" value="1">' if view.everyone else ""}
<label for="filter">Filter keys</label>
<input id="filter" name="q" type="search" value="{e(query)}" data-filter="keys-table" aria-controls="keys-table"
 placeholder="Name, owner, allocation, hint, description">
<button type="submit">Filter</button>
<span id="filter-count" class="help" aria-live="polite">{len(rows)} of {len(keys)} keys</span>
</form>
<div class="scroll"><table id="keys-table">
<caption class="visually-hidden">{"AI keys" if view.everyone else "Your AI keys"} in {e(namespace)}</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Owner</th><th scope="col">Key</th>
<th scope="col">Allocation</th><th scope="col">Created</th><th scope="col">Expires</th>
<th scope="col">Last used</th><th scope="col" class="num">Spend (USD)</th><th scope="col">Phase</th>
<th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>{body_rows}</tbody></table></div>"""
    return layout("AI Keys", body, viewer, "keys")


def _search_text(obj: dict[str, object]) -> str:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj["metadata"]
    assert isinstance(spec, dict) and isinstance(status, dict) and isinstance(meta, dict)
    parts = (
        meta["name"],
        spec.get("owner") or "",
        (spec.get("allocationRef") or {}).get("name", ""),
        status.get("keyHint") or "",
        spec.get("description") or "",
        status.get("phase") or "Pending",
    )
    return " ".join(str(p) for p in parts).lower()


def key_self_page(viewer: Viewer, me: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th scope=row>{e(label)}</th><td>{value}</td></tr>"
        for label, value in (
            ("Key", f"{e(me['namespace'])}/{e(me['name'])}"),
            ("Hint", f"<code>{e(me.get('key_hint'))}</code>"),
            ("Allocation", e(me["allocation"])),
            ("Expires", when(me.get("expires_at"))),
            ("Models", e(", ".join(me.get("models") or []) or "every model of the namespace")),
            ("Budget this period", f"{usd(str(me['budget_usd']))} USD ({e(me['period'])})"),
            ("Spent", f"{usd(str(me['spent_usd']))} USD"),
            ("Remaining", f"{usd(str(me['remaining_usd']))} USD"),
        )
    )
    body = (
        "<h1>AI Keys</h1><p>Signed in with an AI key: this is the key itself. Sign in with a Kubernetes "
        f'token to create or revoke keys.</p><div class="scroll"><table class="facts">{rows}</table></div>'
    )
    return layout("AI Keys", body, viewer, "keys")


def confirm_page(viewer: Viewer, verb: str, namespace: str, name: str, text: str) -> str:
    body = f"""
<section class="card narrow"><h1>{e(verb.capitalize())} {e(namespace)}/{e(name)}?</h1><p>{e(text)}</p>
<form method="post" action="/ui/keys/{e(verb)}">{csrf_field(viewer.csrf)}
<input type="hidden" name="namespace" value="{e(namespace)}"><input type="hidden" name="name" value="{e(name)}">
<input type="hidden" name="confirm" value="yes">
<button type="submit" class="danger">{e(verb.capitalize())}</button>
<a href="{e(url("/ui/keys", namespace=namespace))}">Cancel</a></form></section>"""
    return layout(f"{verb.capitalize()} key", body, viewer, "keys")


def error_page(viewer: Viewer | None, title: str, message: str, status_hint: str = "") -> str:
    back = (
        '<p><a href="/ui/keys">Back to AI Keys</a></p>'
        if viewer
        else '<p><a href="/ui/login">Sign in</a></p>'
    )
    return layout(title, f"<h1>{e(title)}</h1>{notice(message)}{e(status_hint)}{back}", viewer)


# --- AI Usage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationRow:
    namespace: str
    name: str
    budget: str
    spent: str
    remaining: str
    period: str


def _chart(report: UsageReport) -> str:
    """Spend per day as SVG bars, each with its numbers in a <title> (hover, screen readers)."""
    days = report.days
    values = [Decimal(d.cost_usd) for d in days]
    top = max(values, default=Decimal(0))
    width, height, pad = 720, 180, 22
    bar_w = (width - 2 * pad) / max(len(days), 1)
    bars = []
    for i, (d, v) in enumerate(zip(days, values, strict=True)):
        h = 0.0 if top == 0 else float(v / top) * (height - 2 * pad)
        x = pad + i * bar_w
        bars.append(
            f'<rect x="{x + bar_w * 0.1:.1f}" y="{height - pad - h:.1f}" width="{bar_w * 0.8:.1f}" '
            f'height="{max(h, 0.5):.1f}" class="bar"><title>{e(d.day.isoformat())}: {e(d.cost_usd)} USD, '
            f"{d.requests:,} requests, {d.input_tokens:,} in ({d.cached_tokens:,} cached, "
            f"{d.cache_write_tokens:,} cache writes) / {d.output_tokens:,} out tokens</title></rect>"
        )
    first, last = days[0].day.isoformat() if days else "", days[-1].day.isoformat() if days else ""
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title">'
        f'<title id="chart-title">Spend per day, {e(first)} to {e(last)}; highest {e(str(top))} USD</title>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>'
        f"{''.join(bars)}"
        f'<text x="{pad}" y="{height - 6}" class="label">{e(first)}</text>'
        f'<text x="{width - pad}" y="{height - 6}" class="label end">{e(last)}</text>'
        f'<text x="{pad}" y="14" class="label">{e(str(top))} USD</text></svg>'
    )


USAGE_HEADS = (
    '<th scope="col" class="num" title="Every input token, cached or not">Input tokens</th>'
    '<th scope="col" class="num" title="Of the input tokens: read from the provider&#x27;s prompt cache">'
    "Cached</th>"
    '<th scope="col" class="num" title="Of the input tokens: written to the provider&#x27;s prompt cache">'
    "Cache writes</th>"
    '<th scope="col" class="num">Output tokens</th><th scope="col" class="num">Requests</th>'
)


def _token_cells(a: Amounts) -> str:
    """A report row's token and request cells, in USAGE_HEADS' order."""
    return "".join(
        f'<td class="num">{number(v)}</td>'
        for v in (a.input_tokens, a.cached_tokens, a.cache_write_tokens, a.output_tokens, a.requests)
    )


def _share_bar(share: str) -> str:
    pct = float(Decimal(share)) * 100
    return (
        f'<svg class="share" viewBox="0 0 100 8" aria-hidden="true"><rect width="100" height="8" class="track"/>'
        f'<rect width="{pct:.1f}" height="8" class="fill"/></svg> {pct:.1f}%'
    )


def usage_page(
    viewer: Viewer,
    report: UsageReport,
    namespace: str,
    namespaces: Sequence[str],
    all_ok: bool,
    allocations: Iterable[AllocationRow],
    json_url: str,
) -> str:
    t = report.totals
    by = report.group_by.value
    days = (report.until - report.since).days + 1
    period_links = "".join(
        f'<a href="{e(url("/ui/usage", namespace=namespace, days=n, by=by))}"'
        f"{CURRENT if n == days else ''}>{n} days</a>"
        for n in PERIODS
    )
    group_links = "".join(
        f'<a href="{e(url("/ui/usage", namespace=namespace, days=days, by=value))}"'
        f"{CURRENT if value == by else ''}>{label}</a>"
        for value, label in GROUPINGS
    )
    group_label = dict(GROUPINGS).get(by, by)
    rows = (
        "".join(
            f'<tr><th scope="row">{e(g.name)}</th><td class="num">{usd(g.cost_usd)}</td><td class="share">{_share_bar(g.share)}</td>'
            f"{_token_cells(g)}</tr>"
            for g in report.groups
        )
        or '<tr class="empty"><td colspan="8">No usage in this period.</td></tr>'
    )
    alloc_rows = "".join(
        f'<tr><th scope="row">{e(a.name if namespace != "*" else f"{a.namespace}/{a.name}")}</th>'
        f'<td class="num">{usd(a.budget)}</td><td class="num">{usd(a.spent)}</td>'
        f'<td class="num">{usd(a.remaining)}</td><td>{e(a.period)}</td></tr>'
        for a in allocations
    )
    allocations_html = (
        '<h2 id="alloc-title">Allocations</h2><div class="scroll"><table aria-labelledby="alloc-title">'
        '<thead><tr><th scope="col">Allocation</th><th scope="col" class="num">Budget (USD)</th>'
        '<th scope="col" class="num">Spent this period</th><th scope="col" class="num">Remaining</th>'
        f'<th scope="col">Period</th></tr></thead><tbody>{alloc_rows}</tbody></table></div>'
        if alloc_rows
        else ""
    )
    day_rows = "".join(
        f'<tr><th scope="row">{e(d.day.isoformat())}</th><td class="num">{usd(d.cost_usd)}</td>'
        f"{_token_cells(d)}</tr>"
        for d in report.days
    )
    picker = (
        ""
        if viewer.is_key
        else namespace_picker("/ui/usage", namespaces, namespace, {"days": str(days), "by": by}, all_ok)
    )
    scope = (
        "this key" if viewer.is_key else ("all namespaces" if namespace == "*" else f"namespace {namespace}")
    )
    body = f"""
<h1>AI Usage</h1>
{picker}
<p class="scope">Usage of {e(scope)}, {e(report.since.isoformat())} – {e(report.until.isoformat())} (UTC)</p>
<nav class="segmented" aria-label="Period">{period_links}</nav>
<section class="totals" aria-label="Totals">
<div class="stat"><span class="label">Total spend</span><span class="value" id="total-spend">{usd(t.cost_usd)} <small>USD</small></span></div>
<div class="stat"><span class="label">Input tokens</span><span class="value" id="total-input">{number(t.input_tokens)}</span></div>
<div class="stat"><span class="label">Cached input: read / written</span><span class="value"><span id="total-cached">{number(t.cached_tokens)}</span> <small>/ <span id="total-cache-writes">{number(t.cache_write_tokens)}</span></small></span></div>
<div class="stat"><span class="label">The cache saved</span><span class="value" id="cache-saved">{usd(report.cache_saved_usd)} <small>USD</small></span></div>
<div class="stat"><span class="label">Output tokens</span><span class="value" id="total-output">{number(t.output_tokens)}</span></div>
<div class="stat"><span class="label">Requests</span><span class="value" id="total-requests">{number(t.requests)}</span></div>
</section>
<section class="card"><h2>Spend over time</h2>{_chart(report)}
<details><summary>Numbers per day</summary><div class="scroll"><table>
<thead><tr><th scope="col">Day</th><th scope="col" class="num">Spend (USD)</th>{USAGE_HEADS}</tr></thead>
<tbody>{day_rows}</tbody></table></div></details></section>
<h2 id="breakdown-title">By {e(group_label.lower())}</h2>
<nav class="segmented" aria-label="Break down by">{group_links}</nav>
<div class="scroll"><table id="breakdown" aria-labelledby="breakdown-title">
<thead><tr><th scope="col">{e(group_label)}</th><th scope="col" class="num">Spend (USD)</th><th scope="col">Share</th>
{USAGE_HEADS}</tr></thead>
<tbody>{rows}</tbody></table></div>
{allocations_html}
<p class="help"><a href="{e(json_url)}">This report as JSON</a> (the same as <code>GET /api/usage</code>).</p>"""
    return layout("AI Usage", body, viewer, "usage")

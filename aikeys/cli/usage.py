"""`aikeys usage`: spend and tokens over 7/30/90 days, grouped, with a per-day chart.

Read through the Kubernetes API server (the aggregated API usage.aikeys.dev, served by the
gateway), so it works with whatever credential kubectl uses and RBAC decides who reads what:
`list keyusages` in a namespace (cluster-wide for -A).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import click

from aikeys.cli.context import Context
from aikeys.cli.render import bar, table
from aikeys.kube.client import KubeClient, NotFound
from aikeys.money import format_usd, parse_usd

pass_ctx = click.make_pass_decorator(Context)
USAGE_API = "/apis/usage.aikeys.dev/v1alpha1"
GROUPINGS = ("key", "model", "allocation", "namespace", "owner")
NO_OWNER = "(none)"  # keys without spec.owner
DELETED = " (deleted)"  # after a deleted key's name (phase Gone): apart from a new key of that name


def keyusages_path(namespace: str | None) -> str:
    return f"{USAGE_API}/namespaces/{namespace}/keyusages" if namespace else f"{USAGE_API}/keyusages"


async def fetch(
    client: KubeClient, namespace: str | None, days: int, until: dt.date | None
) -> list[dict[str, Any]]:
    params = {"days": str(days), **({"until": until.isoformat()} if until else {})}
    try:
        listing = await client.get(keyusages_path(namespace), params=params)
    except NotFound as err:
        if err.reason == "NotFound":  # a Status from our API: the namespace-scoped list is never 404
            raise
        raise click.ClickException(
            "the usage API (APIService v1alpha1.usage.aikeys.dev) is not installed in this cluster: "
            "install the aikeys chart, or check `kubectl get apiservice v1alpha1.usage.aikeys.dev`"
        ) from err
    items: list[dict[str, Any]] = listing.get("items", [])
    return items


def _amounts(cost: int, tin: int, tout: int, requests: int, cached: int, writes: int) -> dict[str, Any]:
    return {
        "cost_usd": format_usd(cost),
        "input_tokens": tin,
        "output_tokens": tout,
        "requests": requests,
        "cached_tokens": cached,
        "cache_write_tokens": writes,
    }


def _zero() -> list[int]:
    return [0] * 6  # cost, input, output, requests, cached, cache writes (as _amounts takes them)


def _add(into: list[int], usage: dict[str, Any]) -> None:
    """Add a KeyUsage's figures (cached and cache-write tokens: parts of the input tokens, 0
    from a gateway that does not report them)."""
    into[0] += parse_usd(usage["cost"])
    into[1] += int(usage["inputTokens"])
    into[2] += int(usage["outputTokens"])
    into[3] += int(usage["requests"])
    into[4] += int(usage.get("cachedTokens", 0))
    into[5] += int(usage.get("cacheWriteTokens", 0))


def _parts(item: dict[str, Any], by: str) -> Iterable[tuple[str, dict[str, Any]]]:
    meta = item["metadata"]
    if by == "model":
        return [(m["model"], m) for m in item.get("models", [])]
    name = {
        "key": f"{meta['namespace']}/{meta['name']}{DELETED if item.get('keyPhase') == 'Gone' else ''}",
        "allocation": f"{meta['namespace']}/{item['allocation']}",
        "namespace": meta["namespace"],
        "owner": item.get("owner") or NO_OWNER,
    }[by]
    return (
        [(name, item["usage"])] if int(item["usage"]["requests"]) or parse_usd(item["usage"]["cost"]) else []
    )


def report(items: list[dict[str, Any]], by: str, until: dt.date, days: int) -> dict[str, Any]:
    """KeyUsage objects → totals, groups (by spend, with their share) and every day of the window."""
    total = _zero()
    groups: dict[str, list[int]] = {}
    window = [(until - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    per_day: dict[str, list[int]] = {d: _zero() for d in window}
    for item in items:
        _add(total, item["usage"])
        for name, usage in _parts(item, by):
            _add(groups.setdefault(name, _zero()), usage)
        for day in item.get("days", []):
            if day["day"] in per_day:
                _add(per_day[day["day"]], day)
    ordered = sorted(groups.items(), key=lambda g: (-g[1][0], g[0]))
    return {
        "since": (until - dt.timedelta(days=days - 1)).isoformat(),
        "until": until.isoformat(),
        "group_by": by,
        "totals": _amounts(*total),
        "groups": [
            {
                "name": name,
                **_amounts(*amounts),
                "share": f"{amounts[0] / total[0]:.4f}"
                if total[0] > 0
                else "0",  # a display ratio, not money
            }
            for name, amounts in ordered
        ],
        "days": [{"day": d, **_amounts(*per_day[d])} for d in window],
    }


def render(report: dict[str, Any], scope: str) -> str:
    t = report["totals"]
    by = report["group_by"]
    out = [
        click.style(f"Usage of {scope}, {report['since']} – {report['until']} (UTC)", bold=True),
        "",
        f"  Spend          {t['cost_usd']} USD",
        f"  Input tokens   {t['input_tokens']:,}",
        f"    cached       {t['cached_tokens']:,}",  # parts of the input tokens
        f"    cache writes {t['cache_write_tokens']:,}",
        f"  Output tokens  {t['output_tokens']:,}",
        f"  Requests       {t['requests']:,}",
        "",
    ]
    if report["groups"]:
        rows = [
            [
                g["name"],
                g["cost_usd"],
                f"{Decimal(g['share']) * 100:.1f}%",
                f"{g['input_tokens']:,}",
                f"{g['cached_tokens']:,}",
                f"{g['cache_write_tokens']:,}",
                f"{g['output_tokens']:,}",
                f"{g['requests']:,}",
            ]
            for g in report["groups"]
        ]
        head = [by.upper(), "SPEND (USD)", "SHARE", "INPUT TOKENS", "CACHED", "CACHE WRITES", "OUTPUT TOKENS"]
        out += [
            table([*head, "REQUESTS"], rows),
            "",
        ]
    else:
        out += ["No usage in this period.", ""]
    largest = max((Decimal(d["cost_usd"]) for d in report["days"]), default=Decimal(0))
    out.append(click.style("Spend per day", bold=True))
    for d in report["days"]:
        day = dt.date.fromisoformat(d["day"])
        chart = bar(float(Decimal(d["cost_usd"])), float(largest))
        out.append(f"  {day:%a %m-%d}  {chart:<31} {d['cost_usd']} USD  {d['requests']:,} req")
    return "\n".join(out)


def as_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            *("group", "name", "cost_usd", "share", "input_tokens", "output_tokens", "requests"),
            *("cached_tokens", "cache_write_tokens"),  # new columns last: old readers keep their places
        ]
    )
    for g in report["groups"]:
        writer.writerow(
            [
                report["group_by"],
                g["name"],
                g["cost_usd"],
                g["share"],
                g["input_tokens"],
                g["output_tokens"],
                g["requests"],
                g["cached_tokens"],
                g["cache_write_tokens"],
            ]
        )
    for d in report["days"]:
        writer.writerow(
            [
                *("day", d["day"], d["cost_usd"], "", d["input_tokens"], d["output_tokens"], d["requests"]),
                *(d["cached_tokens"], d["cache_write_tokens"]),
            ]
        )
    return buf.getvalue()


@click.command()
@click.option(
    "--days", type=click.IntRange(1, 100), default=7, show_default=True, help="7, 30 or 90 (1–100)."
)
@click.option(
    "--by",
    "group_by",
    type=click.Choice(GROUPINGS),
    default="model",
    show_default=True,
    help="How to break the total down.",
)
@click.option(
    "-A",
    "--all-namespaces",
    is_flag=True,
    help="The organisation: every namespace (needs the right to list keyusages cluster-wide).",
)
@click.option(
    "--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day (UTC) of the report; default today."
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@pass_ctx
def usage(
    ctx: Context,
    days: int,
    group_by: str,
    all_namespaces: bool,
    until: dt.datetime | None,
    output: str,
) -> None:
    """Spend, tokens and requests of a namespace (or of all), grouped, with a per-day chart.

    Read through the Kubernetes API server (`kubectl get keyusages` shows the same per key):
    whoever may list keyusages.usage.aikeys.dev in a namespace may read its usage.
    """
    namespace = None if all_namespaces else ctx.ns()
    last = until.date() if until else dt.datetime.now(dt.UTC).date()

    async def go(client: KubeClient) -> list[dict[str, Any]]:
        return await fetch(client, namespace, days, until.date() if until else None)

    items = ctx.run(go)
    result = report(items, group_by, last, days)
    if output == "json":
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif output == "csv":
        click.echo(as_csv(result), nl=False)
    else:
        click.echo(render(result, "all namespaces" if all_namespaces else f"namespace {namespace}"))

"""`aikeys usage`: spend and tokens over 7/30/90 days, grouped, with a per-day chart."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import aiohttp
import click

from aikeys.cli.context import Context, gateway_root, run
from aikeys.cli.render import bar, table

pass_ctx = click.make_pass_decorator(Context)


async def fetch(root: str, token: str, params: dict[str, str]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{root}/api/usage",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp,
    ):
        body = await resp.json(content_type=None)
        if resp.status != 200:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else str(body)
            raise click.ClickException(f"the gateway refused ({resp.status}): {message}")
        result: dict[str, Any] = body
        return result


def render(report: dict[str, Any], scope: str) -> str:
    t = report["totals"]
    by = report["group_by"]
    out = [
        click.style(f"Usage of {scope}, {report['since']} – {report['until']} (UTC)", bold=True),
        "",
        f"  Spend          {t['cost_usd']} USD",
        f"  Input tokens   {t['input_tokens']:,}",
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
                f"{g['output_tokens']:,}",
                f"{g['requests']:,}",
            ]
            for g in report["groups"]
        ]
        out += [
            table([by.upper(), "SPEND (USD)", "SHARE", "INPUT TOKENS", "OUTPUT TOKENS", "REQUESTS"], rows),
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
    writer.writerow(["group", "name", "cost_usd", "share", "input_tokens", "output_tokens", "requests"])
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
            ]
        )
    for d in report["days"]:
        writer.writerow(
            ["day", d["day"], d["cost_usd"], "", d["input_tokens"], d["output_tokens"], d["requests"]]
        )
    return buf.getvalue()


@click.command()
@click.option(
    "--days", type=click.IntRange(1, 100), default=7, show_default=True, help="7, 30 or 90 (1–100)."
)
@click.option(
    "--by",
    "group_by",
    type=click.Choice(["key", "model", "allocation", "namespace"]),
    default="model",
    show_default=True,
    help="How to break the total down.",
)
@click.option(
    "-A",
    "--all-namespaces",
    is_flag=True,
    help="The organisation: every namespace (needs the right to list aikeys cluster-wide).",
)
@click.option(
    "--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day (UTC) of the report; default today."
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option("--gateway", help="Gateway URL (default: $AIKEYS_GATEWAY_URL).")
@click.option("--token", help="Kubernetes bearer token (default: the one in your kubeconfig).")
@pass_ctx
def usage(
    ctx: Context,
    days: int,
    group_by: str,
    all_namespaces: bool,
    until: dt.datetime | None,
    output: str,
    gateway: str | None,
    token: str | None,
) -> None:
    """Spend, tokens and requests of a namespace (or of all), grouped, with a per-day chart.

    The gateway checks your Kubernetes identity: whoever may list AIKeys in a namespace may
    read its usage.
    """
    root = gateway_root(gateway)
    authorization = run(ctx.config().authorization()) if token is None else f"Bearer {token}"
    scheme, _, bearer = (authorization or "").partition(" ")
    if scheme != "Bearer" or not bearer:
        raise click.ClickException(
            "your kubeconfig has no bearer token (client certificates or exec plugins "
            "cannot be forwarded): pass --token $(kubectl create token <serviceaccount>)"
        )
    namespace = "*" if all_namespaces else ctx.ns()
    params = {"days": str(days), "group_by": group_by, "namespace": namespace}
    if until:
        params["until"] = until.date().isoformat()
    report = run(fetch(root, bearer, params))
    if output == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    elif output == "csv":
        click.echo(as_csv(report), nl=False)
    else:
        click.echo(render(report, "all namespaces" if all_namespaces else f"namespace {namespace}"))

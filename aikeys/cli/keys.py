"""`aikeys keys ...`: create (shown once), list, revoke, disable, enable, rotate."""

from __future__ import annotations

import json
from typing import Any

import click
import yaml

from aikeys import issuing
from aikeys.cli.context import Context, aikeys_path
from aikeys.cli.render import table, when
from aikeys.durations import DurationError, parse_duration
from aikeys.kube.client import Forbidden, KubeClient, NotFound

pass_ctx = click.make_pass_decorator(Context)


def _not_ready(err: issuing.NotReady) -> click.ClickException:
    return click.ClickException(
        f"AIKey {err.namespace}/{err.name} is not ready after {err.seconds:.0f}s "
        f"(phase: {err.phase or 'no status'}). Is the aikeys operator running? "
        f"See `kubectl describe aikey {err.name} -n {err.namespace}`."
    )


def _show_once(key: str, base: str | None, kept: bool, secret: str, ns: str) -> None:
    click.echo(click.style("Your key (shown once, store it now):", bold=True), err=True)
    click.echo(key)
    if base:
        click.echo(f"Base URL: {base}", err=True)
    if kept:
        click.echo(f"The key stays in Secret {ns}/{secret} (envFrom it in a workload).", err=True)
    else:
        click.echo("It is no longer stored in the cluster; only its SHA-256 is.", err=True)


SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


async def whoami(client: KubeClient) -> str | None:
    """The user name the API server knows us by (SelfSubjectReview, Kubernetes >= 1.28), or None
    when the cluster cannot tell."""
    try:
        review = await client.create(
            SELF_SUBJECT_REVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
    except (NotFound, Forbidden):
        return None
    name = ((review.get("status") or {}).get("userInfo") or {}).get("username")
    return str(name) if name else None


@click.group()
def keys() -> None:
    """Create, list, revoke, disable, enable and rotate AI keys."""


@keys.command()
@click.argument("name")
@click.option("--allocation", "-a", required=True, help="Allocation (same namespace) the key draws from.")
@click.option("--ttl", help="Lifetime, e.g. 30d, 720h, 90m.")
@click.option("--expires-at", help="Expiry as RFC 3339, e.g. 2027-01-31T00:00:00Z.")
@click.option("--models", multiple=True, help="Allowed model IDs (repeatable or comma-separated; * globs).")
@click.option("--description", help="Who or what the key is for.")
@click.option(
    "--owner",
    help="The Kubernetes user the key belongs to (default: you, as the API server knows you). Another "
    "user needs the right to create aikeys/owner in the namespace (platform admins).",
)
@click.option("--keep-secret", is_flag=True, help="Keep the key in its Secret for workloads that envFrom it.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the key.")
@pass_ctx
def create(
    ctx: Context,
    name: str,
    allocation: str,
    ttl: str | None,
    expires_at: str | None,
    models: tuple[str, ...],
    description: str | None,
    owner: str | None,
    keep_secret: bool,
    timeout: float,
) -> None:
    """Create an AIKey owned by you, wait until it is Active and print the key once."""
    if ttl and expires_at:
        raise click.UsageError("pass --ttl or --expires-at, not both")
    if ttl:
        try:
            parse_duration(ttl)
        except DurationError as err:
            raise click.BadParameter(str(err), param_hint="--ttl") from err
    spec: dict[str, Any] = {"allocationRef": {"name": allocation}}
    if ttl:
        spec["ttl"] = ttl
    if expires_at:
        spec["expiresAt"] = expires_at
    allowed = [m.strip() for group in models for m in group.split(",") if m.strip()]
    if allowed:
        spec["models"] = allowed
    if description:
        spec["description"] = description
    ns = ctx.ns()

    async def go(client: KubeClient) -> issuing.Issued:
        me = owner or await whoami(client)
        if me:
            spec["owner"] = me
        try:
            return await issuing.create(client, ns, name, spec, wait_seconds=timeout, keep_secret=keep_secret)
        except issuing.NotReady as err:
            raise _not_ready(err) from None

    issued = ctx.run(go)
    _show_once(issued.key, issued.base_url, keep_secret, issued.secret, ns)


def _rows(items: list[dict[str, Any]], all_ns: bool) -> list[list[str]]:
    rows = []
    for o in items:
        st = o.get("status") or {}
        row = [
            o["metadata"]["name"],
            o["spec"].get("owner") or "-",
            st.get("keyHint") or "-",
            o["spec"]["allocationRef"]["name"],
            when(st.get("createdAt") or o["metadata"].get("creationTimestamp")),
            when(st.get("expiresAt")),
            when(st.get("lastUsedAt")),
            st.get("spend") or "0.00",
            st.get("phase") or "Pending",
        ]
        rows.append(([o["metadata"]["namespace"]] if all_ns else []) + row)
    return rows


@keys.command("list")
@click.option("-A", "--all-namespaces", is_flag=True, help="Keys of every namespace you may list.")
@click.option(
    "--filter", "text", help="Only keys whose name, owner, description, hint or allocation contain TEXT."
)
@click.option("--allocation", help="Only keys drawing from this allocation.")
@click.option("--owner", help="Only keys of this owner (a Kubernetes user name).")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
@pass_ctx
def list_(
    ctx: Context,
    all_namespaces: bool,
    text: str | None,
    allocation: str | None,
    owner: str | None,
    output: str,
) -> None:
    """List keys: name, owner, hint, allocation, created, expires, last used, spend, phase."""
    ns = None if all_namespaces else ctx.ns()

    async def go(client: KubeClient) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get(aikeys_path(ns))).get("items", [])
        return items

    items = ctx.run(go)
    if allocation:
        items = [o for o in items if o["spec"]["allocationRef"]["name"] == allocation]
    if owner:
        items = [o for o in items if o["spec"].get("owner") == owner]
    if text:
        needle = text.lower()
        items = [
            o
            for o in items
            if needle
            in " ".join(
                [
                    o["metadata"]["name"],
                    o["spec"].get("owner") or "",
                    o["spec"].get("description") or "",
                    (o.get("status") or {}).get("keyHint") or "",
                    o["spec"]["allocationRef"]["name"],
                ]
            ).lower()
        ]
    items.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    if output != "table":
        plain = [
            {
                "namespace": o["metadata"]["namespace"],
                "name": o["metadata"]["name"],
                "owner": o["spec"].get("owner"),
                "hint": (o.get("status") or {}).get("keyHint"),
                "allocation": o["spec"]["allocationRef"]["name"],
                "created": (o.get("status") or {}).get("createdAt"),
                "expires": (o.get("status") or {}).get("expiresAt"),
                "lastUsed": (o.get("status") or {}).get("lastUsedAt"),
                "spend": (o.get("status") or {}).get("spend"),
                "phase": (o.get("status") or {}).get("phase"),
                "description": o["spec"].get("description"),
            }
            for o in items
        ]
        click.echo(
            json.dumps(plain, indent=2) if output == "json" else yaml.safe_dump(plain, sort_keys=False)
        )
        return
    if not items:
        click.echo("No keys." if ns is None else f"No keys in namespace {ns}.", err=True)
        return
    headers = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME",
        "OWNER",
        "HINT",
        "ALLOCATION",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "SPEND (USD)",
        "PHASE",
    ]
    click.echo(table(headers, _rows(items, all_namespaces)))


@keys.command()
@click.argument("name")
@pass_ctx
def revoke(ctx: Context, name: str) -> None:
    """Delete the AIKey: the key stops working at once and its Secret is deleted."""
    ns = ctx.ns()

    async def go(client: KubeClient) -> None:
        if await client.delete(aikeys_path(ns, name)) is None:
            raise click.ClickException(f"no AIKey {name} in namespace {ns}")

    ctx.run(go)
    click.echo(f"Revoked {ns}/{name}.")


def _set_disabled(ctx: Context, name: str, disabled: bool) -> None:
    ns = ctx.ns()

    async def go(client: KubeClient) -> None:
        await client.patch(aikeys_path(ns, name), {"spec": {"disabled": disabled}})

    ctx.run(go)
    click.echo(f"{'Disabled' if disabled else 'Enabled'} {ns}/{name}.")


@keys.command()
@click.argument("name")
@pass_ctx
def disable(ctx: Context, name: str) -> None:
    """Refuse requests with this key until it is enabled again."""
    _set_disabled(ctx, name, True)


@keys.command()
@click.argument("name")
@pass_ctx
def enable(ctx: Context, name: str) -> None:
    """Accept requests with this key again."""
    _set_disabled(ctx, name, False)


@keys.command()
@click.argument("name")
@click.option(
    "--grace", default=None, help="How long the old key keeps working, e.g. 1h (default: the key's)."
)
@click.option("--keep-secret", is_flag=True, help="Keep the new key in its Secret.")
@click.option("--timeout", default=60.0, show_default=True)
@pass_ctx
def rotate(ctx: Context, name: str, grace: str | None, keep_secret: bool, timeout: float) -> None:
    """Mint a new key for NAME and print it once; the old one works during the grace period."""
    if grace:
        try:
            parse_duration(grace)
        except DurationError as err:
            raise click.BadParameter(str(err), param_hint="--grace") from err
    ns = ctx.ns()

    async def go(client: KubeClient) -> issuing.Issued:
        try:
            return await issuing.rotate(
                client, ns, name, grace, wait_seconds=timeout, keep_secret=keep_secret
            )
        except issuing.NotReady as err:
            raise _not_ready(err) from None

    issued = ctx.run(go)
    _show_once(issued.key, issued.base_url, keep_secret, issued.secret, ns)
    if issued.previous_valid_until:
        click.echo(f"The previous key works until {when(issued.previous_valid_until)} UTC.", err=True)

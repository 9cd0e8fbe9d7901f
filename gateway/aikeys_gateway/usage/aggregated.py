"""`usage.aikeys.dev/v1alpha1`: AI-key usage as a Kubernetes aggregated API, served by the gateway.

`kubectl get keyusages -n team-a` goes to the kube-apiserver, which authenticates the caller with
whatever credential kubectl used (token, client certificate, exec plugin, OIDC) and forwards the
request to this listener, named by an APIService — the way metrics-server serves `kubectl top`:

- TLS with the serving certificate that the APIService's caBundle vouches for. The client must
  present a certificate signed by the front-proxy CA (`requestheader-client-ca-file` in the
  ConfigMap kube-system/extension-apiserver-authentication), refused in the handshake otherwise,
  and its CN must be one of `requestheader-allowed-names` (401 otherwise).
- The caller is who the X-Remote-User / X-Remote-Group / X-Remote-Extra-* headers say (trusted
  only because of that certificate); a SubjectAccessReview decides what it may read: `get` or
  `list` on `keyusages.usage.aikeys.dev` in the namespace (cluster-wide for every namespace).
- Discovery documents (/apis, the group, the version) so that `kubectl get` knows the resource;
  answers are a meta.k8s.io/v1 Table when asked for one (server-side columns), else a
  KeyUsage / KeyUsageList. `?days=N` (1–100, default 30) and `?until=YYYY-MM-DD` choose the window
  (`kubectl get --raw`); every KeyUsage carries its per-day and per-model series.

Numbers come from the ledger (the same per-day records as /api/usage); the keys from the gateway's
informer cache, plus the keys the ledger has usage for that no longer exist (phase Gone, with the
name they had: a new key of the same name is another KeyUsage, which `get` by name returns).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from aikeys.kube.client import ApiError, KubeClient
from aikeys.ledger.store import LedgerUnavailable
from aikeys.money import format_usd
from aikeys_gateway.cache.catalog import Catalog, KeyEntry
from aikeys_gateway.config import UsageAPISettings
from aikeys_gateway.kubeauth import TTLCache
from aikeys_gateway.usage.records import MAX_DAYS, Record, UsageLedger, collect, day_ids

log = logging.getLogger("aikeys.gateway.aggregated")

GROUP = "usage.aikeys.dev"
VERSION = "v1alpha1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
RESOURCE = "keyusages"
KIND = "KeyUsage"
DEFAULT_DAYS = 30
EARLIEST = dt.date(2020, 1, 1)
AUTH_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
JSON = dict[str, Any]


# --- who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontProxy:
    """The API server's front-proxy settings, as published in extension-apiserver-authentication."""

    ca_pem: str
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> FrontProxy:
        ca = data.get("requestheader-client-ca-file") or ""
        if "BEGIN CERTIFICATE" not in ca:
            raise ValueError(
                "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: "
                "the API server runs without --requestheader-client-ca-file, so it cannot vouch for "
                "users towards aggregated APIs"
            )

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = data.get(key)
            return tuple(json.loads(raw)) if raw else default

        return cls(
            ca_pem=ca,
            allowed_names=names("requestheader-allowed-names", ()),
            username_headers=names("requestheader-username-headers", ("X-Remote-User",)),
            uid_headers=names("requestheader-uid-headers", ()),
            group_headers=names("requestheader-group-headers", ("X-Remote-Group",)),
            extra_prefixes=names("requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
        )

    def allows_peer(self, peercert: Mapping[str, Any] | None) -> bool:
        """The client certificate (already verified against the CA) has an allowed CN."""
        if not peercert:
            return False
        if not self.allowed_names:
            return True
        names = [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]
        return any(n in self.allowed_names for n in names)


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


def user_from_headers(headers: Iterable[tuple[str, str]], proxy: FrontProxy) -> User | None:
    """The identity the front proxy forwarded (None without a user name), as Kubernetes reads it:
    the first non-empty username header, every group header value, extras keyed by the rest of the
    header name (lower-case, percent-decoded)."""
    items = list(headers)

    def values(names: tuple[str, ...]) -> list[str]:
        wanted = {n.lower() for n in names}
        return [v for k, v in items if k.lower() in wanted and v]

    users = values(proxy.username_headers)
    if not users:
        return None
    extra: dict[str, list[str]] = {}
    prefixes = [p.lower() for p in proxy.extra_prefixes]
    for k, v in items:
        for prefix in prefixes:
            if k.lower().startswith(prefix) and len(k) > len(prefix):
                extra.setdefault(urllib.parse.unquote(k[len(prefix) :].lower()), []).append(v)
    uids = values(proxy.uid_headers)
    return User(
        name=users[0],
        uid=uids[0] if uids else "",
        groups=tuple(values(proxy.group_headers)),
        extra=tuple(sorted((k, tuple(v)) for k, v in extra.items())),
    )


# --- what is served -----------------------------------------------------------------------------

RESOURCE_LIST: JSON = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": GROUP_VERSION,
    "resources": [
        {
            "name": RESOURCE,
            "singularName": "keyusage",
            "namespaced": True,
            "kind": KIND,
            "verbs": ["get", "list"],
            "shortNames": ["ku"],
        }
    ],
}
_VERSION_ENTRY = {"groupVersion": GROUP_VERSION, "version": VERSION}
API_GROUP: JSON = {
    "kind": "APIGroup",
    "apiVersion": "v1",
    "name": GROUP,
    "versions": [_VERSION_ENTRY],
    "preferredVersion": _VERSION_ENTRY,
}
GROUP_LIST: JSON = {
    "kind": "APIGroupList",
    "apiVersion": "v1",
    "groups": [{k: v for k, v in API_GROUP.items() if k not in ("kind", "apiVersion")}],
}
COLUMNS: list[JSON] = [
    {"name": "Name", "type": "string", "format": "name", "description": "The AIKey's name."},
    {"name": "Allocation", "type": "string", "description": "The Allocation the key draws from."},
    {"name": "Spend", "type": "string", "description": "USD spent in the window."},
    {"name": "Input Tokens", "type": "integer", "description": "Prompt tokens in the window, cached or not."},
    {
        "name": "Cached Tokens",
        "type": "integer",
        "priority": 1,
        "description": "Of the input tokens: read from the provider's prompt cache.",
    },
    {
        "name": "Cache Write Tokens",
        "type": "integer",
        "priority": 1,
        "description": "Of the input tokens: written to the provider's prompt cache.",
    },
    {"name": "Output Tokens", "type": "integer", "description": "Generated tokens in the window."},
    {"name": "Requests", "type": "integer", "description": "Requests charged in the window."},
    {"name": "Last Used", "type": "string", "description": "Time since the key's last request."},
    {"name": "Window", "type": "string", "description": "Days covered, ending with `until` (UTC)."},
    {"name": "Phase", "type": "string", "priority": 1, "description": "The AIKey's phase (Gone: deleted)."},
    {"name": "Owner", "type": "string", "priority": 1, "description": "The user the key belongs to."},
]


@dataclass
class _Totals:
    cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, record: Record) -> None:
        self.cost += record.row.cost
        self.input_tokens += record.row.input_tokens
        self.output_tokens += record.row.output_tokens
        self.requests += record.row.requests
        self.cached_tokens += record.row.cached_tokens
        self.cache_write_tokens += record.row.cache_write_tokens

    def json(self) -> JSON:
        return {
            "cost": format_usd(self.cost),
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "requests": self.requests,
            "cachedTokens": self.cached_tokens,
            "cacheWriteTokens": self.cache_write_tokens,
        }


@dataclass
class _KeyUsage:
    namespace: str
    name: str
    allocation: str
    entry: KeyEntry | None
    uid: str | None  # the AIKey's (None: usage recorded by name, before uids)
    owner: str | None = None  # a deleted key's, as the ledger kept it
    total: _Totals = field(default_factory=_Totals)
    models: dict[str, _Totals] = field(default_factory=dict)
    days: dict[str, _Totals] = field(default_factory=dict)


def _iso(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def _timestamp(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def key_usages(
    keys: Iterable[KeyEntry],
    records: Iterable[Record],
    until: dt.date,
    days: int,
    name: str | None = None,
    last_used: Mapping[tuple[str, str], dt.datetime] | None = None,
) -> list[JSON]:
    """KeyUsage objects: one per key (those known and those with usage in `records`, which
    `usage.collect` named), sorted by namespace and name, an existing key before deleted ones of
    the same name; each with its totals, models (by spend) and every day of the window.
    `last_used` (the ledger's, by namespace and key uid) wins over the AIKey status's older copy."""
    window = day_ids(until, days)
    found: dict[tuple[str, str, bool, str], _KeyUsage] = {}  # (namespace, name, deleted, uid)
    for entry in keys:
        if name is None or entry.name == name:
            found[(entry.namespace, entry.name, False, "")] = _KeyUsage(
                entry.namespace, entry.name, entry.allocation, entry, entry.uid
            )
    for record in records:
        if name is not None and record.key_name != name:
            continue
        where = (record.namespace, record.key_name, record.deleted, record.row.key if record.deleted else "")
        uid = None if record.row.label is None else record.row.key
        usage = found.setdefault(
            where, _KeyUsage(record.namespace, record.key_name, record.allocation, None, uid, record.owner)
        )
        usage.total.add(record)
        usage.models.setdefault(record.row.model, _Totals()).add(record)
        usage.days.setdefault(record.row.day, _Totals()).add(record)
    since = until - dt.timedelta(days=days - 1)
    objects = []
    for (namespace, key, _, _), usage in sorted(found.items()):
        status = usage.entry.status if usage.entry else None
        models = sorted(usage.models.items(), key=lambda m: (-m[1].cost, m[0]))
        objects.append(
            {
                "apiVersion": GROUP_VERSION,
                "kind": KIND,
                "metadata": {
                    "name": key,
                    "namespace": namespace,
                    **({"uid": usage.uid} if usage.uid else {}),
                    "creationTimestamp": _timestamp(status.created_at if status else None),
                },
                "window": {"since": since.isoformat(), "until": until.isoformat(), "days": days},
                "allocation": usage.allocation,
                "owner": usage.entry.spec.owner if usage.entry else usage.owner,
                "keyPhase": (status.phase.value if status and status.phase else None)
                if usage.entry
                else "Gone",
                "lastUsed": _timestamp(
                    max(
                        (
                            t
                            for t in (
                                (last_used or {}).get((namespace, usage.uid or "")),
                                status and status.last_used_at,
                            )
                            if t
                        ),
                        default=None,
                    )
                ),
                "usage": usage.total.json(),
                "models": [{"model": m, **t.json()} for m, t in models],
                "days": [{"day": _iso(d), **usage.days.get(d, _Totals()).json()} for d in window],
            }
        )
    return objects


def _age(timestamp: str | None, now: dt.datetime) -> str:
    """kubectl's short ages: 45s, 12m, 5h, 3d."""
    if not timestamp:
        return "<none>"
    seconds = max(0, int((now - dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(objects: list[JSON], include: str, now: dt.datetime) -> JSON:
    """The meta.k8s.io/v1 Table kubectl prints (`includeObject`: None, Metadata or Object)."""
    rows = []
    for obj in objects:
        row: JSON = {
            "cells": [
                obj["metadata"]["name"],
                obj["allocation"],
                obj["usage"]["cost"],
                obj["usage"]["inputTokens"],
                obj["usage"]["cachedTokens"],
                obj["usage"]["cacheWriteTokens"],
                obj["usage"]["outputTokens"],
                obj["usage"]["requests"],
                _age(obj["lastUsed"], now),
                f"{obj['window']['days']}d",
                obj["keyPhase"] or "<none>",
                obj.get("owner") or "<none>",
            ]
        }
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": ""},
        "columnDefinitions": COLUMNS,
        "rows": rows,
    }


class Problem(Exception):
    """An answer as a metav1 Status (raised by handlers, rendered by the middleware)."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None):
        super().__init__(message)
        self.response = status(code, reason, message, details)


def status(code: int, reason: str, message: str, details: JSON | None = None) -> web.Response:
    """A metav1 Status, the error kubectl understands."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _window(query: Mapping[str, str], today: dt.date) -> tuple[dt.date, int]:
    raw_days = query.get("days") or str(DEFAULT_DAYS)
    if not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}")
    try:
        until = dt.date.fromisoformat(query["until"]) if query.get("until") else today
    except ValueError:
        raise ValueError("until must be a day, YYYY-MM-DD") from None
    if not EARLIEST <= until <= today + dt.timedelta(days=1):
        raise ValueError(f"until must be a day between {EARLIEST} and tomorrow (UTC)")
    return until, int(raw_days)


# --- the server ---------------------------------------------------------------------------------

Authorize = Callable[[User, str, str, str | None], Awaitable[bool]]


class Authorizer:
    """SubjectAccessReview for the forwarded user; answers cached briefly (refusals for 2 s)."""

    def __init__(self, kube: KubeClient, ttl: float = 10.0, refused_ttl: float = 2.0, size: int = 4096):
        self.kube = kube
        self.ttl = ttl
        self.refused_ttl = refused_ttl
        self._cache: TTLCache[tuple[User, str, str, str | None], bool] = TTLCache(size)

    async def __call__(self, user: User, verb: str, namespace: str, name: str | None) -> bool:
        key = (user, verb, namespace, name)
        hit, cached = self._cache.get(key)
        if hit and cached is not None:
            return cached
        attrs = {"verb": verb, "group": GROUP, "version": VERSION, "resource": RESOURCE}
        if namespace:
            attrs["namespace"] = namespace
        if name:
            attrs["name"] = name
        spec: JSON = {"user": user.name, "groups": list(user.groups), "resourceAttributes": attrs}
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        review = await self.kube.create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        allowed = bool((review.get("status") or {}).get("allowed"))
        self._cache.put(key, allowed, self.ttl if allowed else self.refused_ttl)
        return allowed


class UsageAPI:
    """The aiohttp application behind the APIService; takes only what it reads."""

    def __init__(
        self,
        proxy: FrontProxy,
        catalog: Catalog,
        ledger: UsageLedger,
        authorize: Authorize,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ):
        self.proxy = proxy
        self.catalog = catalog
        self.ledger = ledger
        self.authorize = authorize
        self.clock = clock

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._front_proxy_only])
        prefix = f"/apis/{GROUP_VERSION}"
        app.router.add_get("/apis", self._static(GROUP_LIST))
        app.router.add_get(f"/apis/{GROUP}", self._static(API_GROUP))
        app.router.add_get(prefix, self._static(RESOURCE_LIST))
        app.router.add_get(f"{prefix}/{RESOURCE}", self.get)
        app.router.add_get(f"{prefix}/namespaces/{{namespace}}/{RESOURCE}", self.get)
        app.router.add_get(f"{prefix}/namespaces/{{namespace}}/{RESOURCE}/{{name}}", self.get)
        return app

    @web.middleware
    async def _front_proxy_only(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not self.proxy.allows_peer(
            request.transport.get_extra_info("peercert") if request.transport else None
        ):
            return status(
                401, "Unauthorized", "Only the Kubernetes API server's front proxy may call this API."
            )
        user = user_from_headers(request.headers.items(), self.proxy)
        if user is None:
            return status(401, "Unauthorized", "No user: the front proxy did not forward an identity.")
        request["user"] = user
        try:
            return await handler(request)
        except Problem as problem:
            return problem.response
        except web.HTTPNotFound:
            return status(
                404, "NotFound", f"the server could not find the requested resource ({request.path})"
            )
        except web.HTTPMethodNotAllowed:
            return status(
                405, "MethodNotAllowed", f"{request.method} is not supported; KeyUsages are read-only"
            )

    @staticmethod
    def _static(body: JSON) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(body)

        return handler

    async def get(self, request: web.Request) -> web.Response:
        user: User = request["user"]
        namespace = request.match_info.get("namespace", "")
        name = request.match_info.get("name")
        verb = "get" if name else "list"
        if request.query.get("watch") in ("1", "true"):
            raise Problem(405, "MethodNotAllowed", "KeyUsages cannot be watched; list them again")
        now = self.clock()
        try:
            until, days = _window(request.query, now.date())
        except ValueError as err:
            raise Problem(400, "BadRequest", str(err)) from err
        if not await self.authorize(user, verb, namespace, name):
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            target = f'{RESOURCE}.{GROUP} "{name}"' if name else f"{RESOURCE}.{GROUP}"
            raise Problem(
                403,
                "Forbidden",
                f'{target} is forbidden: User "{user.name}" cannot {verb} resource "{RESOURCE}" '
                f'in API group "{GROUP}"{where}',
                {"group": GROUP, "kind": RESOURCE, **({"name": name} if name else {})},
            )
        allocations = [a for (ns, _), a in self.catalog.allocations.objects.items() if namespace in ("", ns)]
        keys = [k for (ns, _), k in self.catalog.keys.objects.items() if namespace in ("", ns)]
        try:
            records = await collect(self.ledger, allocations, until, days, self.catalog.keys.objects)
            last_used = {
                (a.namespace, key): moment
                for a in allocations
                for key, moment in (await self.ledger.last_used(a)).items()
            }
        except LedgerUnavailable as err:
            raise Problem(
                503, "ServiceUnavailable", "The usage ledger is unreachable; retry shortly."
            ) from err
        objects = key_usages(keys, records, until, days, name, last_used)
        if name is not None and not objects:
            details = {"name": name, "group": GROUP, "kind": RESOURCE}
            raise Problem(404, "NotFound", f'{RESOURCE}.{GROUP} "{name}" not found', details)
        if "as=Table" in request.headers.get("Accept", ""):
            return web.json_response(table(objects, request.query.get("includeObject", "Metadata"), now))
        if name is not None:
            return web.json_response(objects[0])
        return web.json_response(
            {"kind": f"{KIND}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": objects}
        )


def server_ssl_context(settings: UsageAPISettings, proxy: FrontProxy) -> ssl.SSLContext:
    """Our serving certificate; clients must present one signed by the front-proxy CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=proxy.ca_pem)
    ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class UsageServer:
    """The listener: reads the front-proxy settings from the cluster, serves TLS on its own port.
    Started once the caches and the ledger's client exist, stopped before them (services.py)."""

    def __init__(self, settings: UsageAPISettings, kube: KubeClient, catalog: Catalog, ledger: UsageLedger):
        self.settings = settings
        self.kube = kube
        self.catalog = catalog
        self.ledger = ledger
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        try:
            configmap = await self.kube.get(AUTH_CONFIGMAP)
        except ApiError as err:
            raise RuntimeError(f"the usage API needs {AUTH_CONFIGMAP} (kube-system): {err}") from err
        proxy = FrontProxy.from_configmap(configmap.get("data") or {})
        api = UsageAPI(proxy, self.catalog, self.ledger, Authorizer(self.kube))
        self.runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner,
            self.settings.host,
            self.settings.port,
            ssl_context=server_ssl_context(self.settings, proxy),
            reuse_port=True,  # every worker process of a pod serves it
        )
        await site.start()
        log.info("usage API (%s) on %s:%d", GROUP_VERSION, self.settings.host, self.settings.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

"""The pages' handlers: sessions checked on every request, actions as the signed-in person."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from aikeys import connect, issuing
from aikeys import keys as aikeys_keys
from aikeys.kube.client import ApiError, Forbidden
from aikeys.ledger.store import LedgerUnavailable
from aikeys.money import format_usd
from aikeys.resources import NAME_PATTERN
from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog, KeyEntry
from aikeys_gateway.config import UISettings
from aikeys_gateway.kubeauth import AIKEYS, USAGE, KubeAuth, Person
from aikeys_gateway.pipeline.auth import authenticate
from aikeys_gateway.ui import connecting, pages, person
from aikeys_gateway.ui.session import (
    COOKIE,
    LOGIN_COOKIE,
    MAX_COOKIE_BYTES,
    Kind,
    Sealer,
    Session,
    clear_cookie,
    derive_key,
    jwt_expiry,
    new_csrf,
    same,
    set_cookie,
)
from aikeys_gateway.usage.records import MAX_DAYS, GroupBy, UsageLedger, UsageReport, collect, own, report

log = logging.getLogger("aikeys.gateway.ui")
MAX_FORM_BYTES = 64 * 1024
SA_PREFIX = "system:serviceaccount:"
NAMESPACE = re.compile(r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")
KEY_NAME = re.compile(NAME_PATTERN)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
CONFIRM = {
    "revoke": "The key stops working at once and cannot be restored.",
    "rotate": "A new key is minted and shown once; the current one keeps working for the key's grace period.",
}
VERBS = ("revoke", "rotate", "disable", "enable")


def _static(name: str) -> tuple[bytes, str]:
    data = resources.files("aikeys_gateway.ui").joinpath("static", name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Signed:
    """A signed-in request: the session, and the person or the key behind it."""

    session: Session
    person: Person | None = None
    key: KeyEntry | None = None

    @property
    def viewer(self) -> pages.Viewer:
        return pages.Viewer(self.session.user, self.session.kind is Kind.KEY, self.session.csrf)


class Problem(Exception):
    """Ends a handler with this page (or redirect)."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)


def refused(message: str, status: int = 403, viewer: pages.Viewer | None = None) -> Problem:
    return Problem(html(pages.error_page(viewer, "Refused", message), status))


def api_message(err: ApiError) -> str:
    if err.status == 403:
        return f"The cluster refused: {err.message}"
    if err.status == 401:
        return "The cluster no longer accepts your token: sign in again."
    return f"{err.status} {err.reason}: {err.message}"


def api_status(err: ApiError) -> int:
    return err.status if 400 <= err.status < 500 else 502


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _with_user(session: Session, user: str) -> Session:
    return Session(session.kind, session.credential, user, session.csrf, session.expires, session.from_proxy)


async def read_form(request: Request, seconds: float) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the only kind the pages send), bounded in size
    and, like the API's bodies, in time (`seconds`, AIKEYS_BODY_TIMEOUT: 408, the connection closed)."""
    body = b""
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM_BYTES:
                    raise refused("The form is too large.", 413)
    except TimeoutError:
        late = refused(f"The form was not received within {seconds:g} seconds.", 408)
        late.response.headers["connection"] = "close"
        raise late from None
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return dict(pairs)


def _days(raw: str | None) -> int:
    try:
        days = int(raw or 7)
    except ValueError:
        return 7
    return min(max(days, 1), MAX_DAYS)


def _group(raw: str | None) -> GroupBy:
    try:
        return GroupBy(raw or "model")
    except ValueError:
        return GroupBy.MODEL


Handler = Callable[[Any, Request], Awaitable[Response]]


def handled(fn: Handler) -> Handler:
    """A Problem becomes its page; an unreachable ledger a readable one."""

    @functools.wraps(fn)
    async def wrapped(self: Any, request: Request) -> Response:
        try:
            return await fn(self, request)
        except Problem as problem:
            return problem.response
        except LedgerUnavailable:
            page = pages.error_page(None, "Usage unavailable", "The ledger is unreachable; retry shortly.")
            return html(page, 503)

    return wrapped


class UI:
    """The pages' handlers, over the gateway's caches, the ledger's usage records, Kubernetes'
    answer to who a token is, and the pool that sends a person's own requests to the API server."""

    def __init__(
        self,
        settings: UISettings,
        catalog: Catalog,
        ledger: UsageLedger,
        kubeauth: KubeAuth,
        connections: person.Connections,
        body_timeout: float,
    ):
        self.settings = settings
        self.catalog = catalog
        self.ledger = ledger
        self.kubeauth = kubeauth
        self.connections = connections
        self.body_timeout = body_timeout
        self.sealer = Sealer(derive_key(settings.session_secret))
        self.assets = {name: _static(name) for name in ("aikeys.css", "aikeys.js")}
        if not settings.session_secret:
            log.warning(
                "AIKEYS_UI_SESSION_KEY is not set: web sessions last as long as this process, on this "
                "replica only"
            )

    # --- sessions -------------------------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        if self.settings.secure_cookies != "auto":
            return self.settings.secure_cookies == "always"
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return request.url.scheme == "https" or forwarded == "https"

    def _session(self, request: Request) -> Session | None:
        sealed = request.cookies.get(COOKIE)
        session = self.sealer.unseal(sealed) if sealed else None
        if session is not None:
            return session
        # an authenticating proxy in front forwards the person's token with every request
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        kind = Kind.KEY if aikeys_keys.well_formed(credential) else Kind.TOKEN
        expires = jwt_expiry(credential) or time.time() + 3600
        return self.sealer.proxy_session(kind, credential, "", expires)

    async def signed(self, request: Request) -> Signed | None:
        """The request's session, checked again (the token still accepted, the key still valid);
        None when there is none or it is no longer good."""
        session = self._session(request)
        if session is None:
            return None
        try:
            if session.kind is Kind.KEY:
                entry = authenticate({"authorization": f"Bearer {session.credential}"}, self.catalog, _now())
                return Signed(_with_user(session, f"{entry.namespace}/{entry.name}"), key=entry)
            who = await self.kubeauth.person(session.credential)
        except errors.GatewayError:
            return None
        return Signed(_with_user(session, who.username), person=who)

    async def require(self, request: Request) -> Signed:
        signed = await self.signed(request)
        if signed is None:
            if request.method == "GET":
                raise Problem(redirect("/ui/login"))
            raise Problem(
                html(pages.error_page(None, "Signed out", "Your session has ended: sign in again."), 401)
            )
        return signed

    def check_post(
        self, request: Request, signed: Signed | None, form: Mapping[str, str], expected: str | None = None
    ) -> None:
        """From this origin, with the CSRF token of the session (or, signing in, of the form)."""
        origin = request.headers.get("origin")
        host = (request.headers.get("x-forwarded-host") or request.headers.get("host", "")).split(",")[0]
        fetch_site = request.headers.get("sec-fetch-site")  # set by browsers, not forgeable by pages
        cross = fetch_site in ("cross-site", "same-site") or (
            origin == "null" and fetch_site != "same-origin"
        )
        if cross or (origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != host.strip()):
            raise refused("This form was sent from another site.")
        token = expected if signed is None else signed.session.csrf
        if not same(form.get("csrf"), token):
            raise refused(
                "The form's security token is missing or stale: reload the page and try again.",
                viewer=signed.viewer if signed else None,
            )

    def set_session(self, response: Response, request: Request, session: Session) -> None:
        value = self.sealer.seal(session)
        if len(value) + len(COOKIE) + 100 > MAX_COOKIE_BYTES:
            message = "This token is too large for a browser cookie; use an auth proxy that forwards it."
            raise Problem(html(pages.login(new_csrf(), message), 400))
        max_age = max(int(session.expires - time.time()), 1)
        set_cookie(response, COOKIE, value, secure=self.secure(request), max_age=max_age)

    # --- helpers --------------------------------------------------------------------------------

    def client(self, signed: Signed) -> person.PersonClient:
        return self.connections.client(signed.session.credential)

    async def namespaces(self, who: Person, resource: tuple[str, str]) -> tuple[list[str], bool]:
        """Namespaces with aikeys objects where the person may list `resource` (AIKeys for the keys
        page; KeyUsages for the usage page, the same SubjectAccessReview as /api/usage), and whether
        they may list it cluster-wide."""
        catalog = self.catalog
        candidates = sorted(
            {ns for ns, _ in catalog.allocations.objects} | {ns for ns, _ in catalog.keys.objects}
        )[:500]
        kubeauth = self.kubeauth
        allowed = await asyncio.gather(*(kubeauth.may_list(who, ns, resource) for ns in candidates))
        everywhere = await kubeauth.may_list(who, "", resource)
        return [ns for ns, ok in zip(candidates, allowed, strict=True) if ok], everywhere

    @staticmethod
    def default_namespace(who: Person, allowed: list[str]) -> str:
        if who.username.startswith(SA_PREFIX):
            return who.username[len(SA_PREFIX) :].split(":", 1)[0]
        return allowed[0] if allowed else "default"

    def base_url(self, request: Request) -> str:
        """The public OpenAI base URL (AIKEYS_GATEWAY_URL: the chart's gateway.publicURL or its
        Ingress host), else as the browser reached us (through a proxy: its host and scheme)."""
        if self.settings.public_url:
            return self.settings.public_url
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        scheme = forwarded or request.url.scheme
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
        return f"{scheme}://{host.split(',')[0].strip()}/api/openai/v1"

    def chat_models(self, namespace: str, patterns: Sequence[str]) -> list[str]:
        """The chat models a key of the namespace with these model patterns may use (the snippets
        name them; embeddings models never)."""
        offered = [
            connect.Offered(f"{p.namespace}:{p.name}/{name}", model.use, p.namespace)
            for p in self.catalog.providers.objects.values()
            if p.shared_to(namespace)
            for name, model in p.models.items()
        ]
        return connect.chat_models(offered, patterns, namespace)

    async def usage_report(
        self, signed: Signed, namespace: str, by: GroupBy, days: int
    ) -> tuple[UsageReport, list[pages.AllocationRow]]:
        """The same report as GET /api/usage, for the person's namespace (or all) or for the key."""
        end = _now().date()
        ledger = self.ledger
        known = self.catalog.keys.objects
        if signed.key is not None:
            alloc = self.catalog.allocation(signed.key.namespace, signed.key.allocation)
            allocations = [] if alloc is None else [alloc]
            records = own(await collect(ledger, allocations, end, days, known), signed.key)
        else:
            assert signed.person is not None
            await self.kubeauth.require_usage(signed.person, "" if namespace == "*" else namespace)
            allocations = [
                a for (ns, _), a in self.catalog.allocations.objects.items() if namespace in ("*", ns)
            ]
            records = await collect(ledger, allocations, end, days, known)
        result = report(records, by, end, days, self.catalog.price)
        rows = []
        for alloc in sorted(allocations, key=lambda a: (a.namespace, a.name)):
            spent = (await ledger.period_state(alloc, _now())).spent
            rows.append(
                pages.AllocationRow(
                    alloc.namespace,
                    alloc.name,
                    format_usd(alloc.budget),
                    format_usd(spent),
                    format_usd(max(alloc.budget - spent, 0)),
                    alloc.period.value,
                )
            )
        return result, rows

    # --- sign-in --------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return redirect("/ui/keys" if await self.signed(request) else "/ui/login")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = self.assets.get(name)
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        data, etag = found
        headers = {
            "ETag": f'"{etag}"',
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=STATIC_TYPES[name[name.rfind(".") :]], headers=headers)

    @handled
    async def login_form(self, request: Request) -> Response:
        if await self.signed(request):
            return redirect("/ui/keys")
        csrf = new_csrf()
        response = html(pages.login(csrf))
        set_cookie(response, LOGIN_COOKIE, csrf, secure=self.secure(request), max_age=3600)
        return response

    @handled
    async def login(self, request: Request) -> Response:
        form = await read_form(request, self.body_timeout)
        csrf = request.cookies.get(LOGIN_COOKIE)
        self.check_post(request, None, form, expected=csrf)
        credential = form.get("credential", "").strip()
        again = csrf or new_csrf()
        if not credential:
            return html(pages.login(again, "Paste a Kubernetes token or an AI key."), 400)
        expires = time.time() + self.settings.session_hours * 3600
        if aikeys_keys.well_formed(credential):
            try:
                entry = authenticate({"authorization": f"Bearer {credential}"}, self.catalog, _now())
            except errors.GatewayError as err:
                return html(pages.login(again, err.message), 401)
            if entry.status.expires_at is not None:
                expires = min(expires, entry.status.expires_at.timestamp())
            session = Session(Kind.KEY, credential, f"{entry.namespace}/{entry.name}", new_csrf(), expires)
        else:
            try:
                who = await self.kubeauth.person(credential)
            except errors.GatewayError:
                message = "The cluster did not accept this token (expired, or not a token)."
                return html(pages.login(again, message), 401)
            expires = min(expires, jwt_expiry(credential) or expires)
            session = Session(Kind.TOKEN, credential, who.username, new_csrf(), expires)
        response = redirect("/ui/keys")
        self.set_session(response, request, session)
        clear_cookie(response, LOGIN_COOKIE, secure=self.secure(request))
        return response

    @handled
    async def logout(self, request: Request) -> Response:
        form = await read_form(request, self.body_timeout)
        signed = await self.signed(request)
        if signed is not None:
            self.check_post(request, signed, form)
        response = redirect("/ui/login")
        clear_cookie(response, COOKIE, secure=self.secure(request))
        return response

    # --- AI Keys --------------------------------------------------------------------------------

    async def _key_self(self, signed: Signed) -> Response:
        key = signed.key
        assert key is not None
        alloc = self.catalog.allocation(key.namespace, key.allocation)
        spent = 0 if alloc is None else (await self.ledger.period_state(alloc, _now())).spent
        budget = 0 if alloc is None else alloc.budget
        me = {
            "namespace": key.namespace,
            "name": key.name,
            "key_hint": key.status.key_hint,
            "allocation": key.allocation,
            "expires_at": key.status.expires_at,
            "models": list(key.spec.models),
            "period": alloc.period.value if alloc else "—",
            "budget_usd": format_usd(budget),
            "spent_usd": format_usd(spent),
            "remaining_usd": format_usd(max(budget - spent, 0)),
        }
        return html(pages.key_self_page(signed.viewer, me))

    async def render_keys(
        self,
        signed: Signed,
        namespace: str | None,
        query: str = "",
        message: str | None = None,
        error: str | None = None,
        status: int = 200,
        everyone: bool = False,
    ) -> Response:
        """The person's own keys in the namespace (`everyone`: all of them), with actions where the
        person may take them: on their own keys, or on every key with the owner exception."""
        if signed.key is not None:
            return await self._key_self(signed)
        who = signed.person
        assert who is not None
        allowed, _ = await self.namespaces(who, AIKEYS)
        ns = namespace or ""
        if not NAMESPACE.match(ns) or ns == "*":
            ns = self.default_namespace(who, allowed)
        client = self.client(signed)
        listed: list[dict[str, Any]] = []
        try:
            listed = await person.list_keys(client, ns)
        except ApiError as err:
            error = error or api_message(err)
            status = err.status if err.status in (401, 403) else status
        mine = [k for k in listed if (k.get("spec") or {}).get("owner") == who.username]
        exception = await self.kubeauth.may_own_for_others(who, ns)
        view = pages.KeysView(everyone, len(mine), len(listed), exception)
        try:
            allocations = await person.list_allocations(client, ns)
        except ApiError:  # may manage keys without reading allocations: the cache knows their names
            allocations = sorted(name for (n, name) in self.catalog.allocations.objects if n == ns)
        last_used: dict[str, dt.datetime] = {}  # by AIKey uid: the ledger's, fresher than the status's
        with contextlib.suppress(LedgerUnavailable):
            for (n, _), alloc in self.catalog.allocations.objects.items():
                if n == ns:
                    for key, moment in (await self.ledger.last_used(alloc)).items():
                        last_used[key] = max(moment, last_used.get(key, moment))
        shown = listed if everyone else mine
        body = pages.keys_page(
            signed.viewer, ns, allowed, shown, allocations, last_used, query, message, error, view
        )
        return html(body, status)

    @handled
    async def keys(self, request: Request) -> Response:
        signed = await self.require(request)
        params = request.query_params
        everyone = params.get("all") == "1"
        return await self.render_keys(signed, params.get("namespace"), params.get("q", ""), everyone=everyone)

    def _changes(self, signed: Signed) -> Person:
        if signed.person is None:
            raise refused("Sign in with a Kubernetes token to change keys.", viewer=signed.viewer)
        return signed.person

    @staticmethod
    def _target(form: Mapping[str, str]) -> tuple[str, str]:
        ns, name = form.get("namespace", ""), form.get("name", "").strip()
        if not NAMESPACE.match(ns) or ns == "*" or not KEY_NAME.match(name):
            raise refused("No such key.", 400)
        return ns, name

    @staticmethod
    def _spec(form: Mapping[str, str], owner: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"allocationRef": {"name": form.get("allocation", "")}, "owner": owner}
        if form.get("expires_at"):
            try:
                day = dt.date.fromisoformat(form["expires_at"])
            except ValueError:
                raise refused("The expiry date is not a date.", 400) from None
            spec["expiresAt"] = f"{day.isoformat()}T00:00:00Z"
        elif form.get("ttl"):
            spec["ttl"] = form["ttl"]
        models = [m.strip() for m in form.get("models", "").split(",") if m.strip()]
        if models:
            spec["models"] = models
        if form.get("description", "").strip():
            spec["description"] = form["description"].strip()
        return spec

    def new_target(
        self, request: Request, namespace: str, patterns: Sequence[str], key: str, base: str | None
    ) -> connect.Target:
        """What a new key's snippets are for: the base URL of its Secret (the operator's public
        URL) or the pages', the chat models it may use, the key itself (shown once anyway)."""
        models = tuple(self.chat_models(namespace, patterns))
        return connect.Target(base or self.base_url(request), models, aikeys_keys.hint(key), key)

    @handled
    async def create(self, request: Request) -> Response:
        signed = await self.require(request)
        form = await read_form(request, self.body_timeout)
        self.check_post(request, signed, form)
        who = self._changes(signed)
        ns, name = self._target(form)
        spec = self._spec(form, who.username)
        try:
            issued = await person.create_key(self.client(signed), ns, name, spec)
        except Forbidden as err:
            error = api_message(err)
            if "secrets" in err.message:
                error = (
                    f"The key {name} was created, but you may not read Secrets in {ns}, so it cannot be "
                    f"shown here: ask for that right, or let a workload use the Secret aikey-{name}."
                )
            return await self.render_keys(signed, ns, error=error, status=403)
        except ApiError as err:
            return await self.render_keys(signed, ns, error=api_message(err), status=api_status(err))
        except issuing.NotReady as err:
            return await self.render_keys(signed, ns, error=str(err), status=504)
        target = self.new_target(request, ns, spec.get("models", []), issued.key, issued.base_url)
        new = connecting.NewKey(ns, name, issued.key, target)
        return html(connecting.new_key_page(signed.viewer, new), 201)

    @handled
    async def act(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb not in VERBS:
            return html(pages.error_page(None, "Not found", "No such action."), 404)
        signed = await self.require(request)
        form = await read_form(request, self.body_timeout)
        self.check_post(request, signed, form)
        self._changes(signed)
        ns, name = self._target(form)
        everyone = form.get("all") == "1"
        if verb in CONFIRM and form.get("confirm") != "yes":
            return html(pages.confirm_page(signed.viewer, verb, ns, name, CONFIRM[verb]))
        client = self.client(signed)
        try:
            if verb == "rotate":
                issued = await person.rotate_key(client, ns, name, None)
                entry = self.catalog.keys.objects.get((ns, name))
                target = self.new_target(
                    request, ns, list(entry.spec.models) if entry else [], issued.key, issued.base_url
                )
                new = connecting.NewKey(
                    ns, name, issued.key, target, issued.previous_valid_until, rotated=True
                )
                return html(connecting.new_key_page(signed.viewer, new))
            if verb == "revoke":
                gone = await person.revoke(client, ns, name)
                message = f"Revoked {ns}/{name}." if gone else f"{ns}/{name} was already gone."
            else:
                await person.set_disabled(client, ns, name, verb == "disable")
                message = f"{verb.capitalize()}d {ns}/{name}."
        except ApiError as err:
            return await self.render_keys(
                signed, ns, error=api_message(err), status=api_status(err), everyone=everyone
            )
        except issuing.NotReady as err:
            return await self.render_keys(signed, ns, error=str(err), status=504, everyone=everyone)
        return await self.render_keys(signed, ns, message=message, everyone=everyone)

    # --- Connect --------------------------------------------------------------------------------

    @handled
    async def connect(self, request: Request) -> Response:
        """Every tool's settings for this gateway: the models of the person's own keys in the
        namespace (or of the one chosen), the key named by its hint only."""
        signed = await self.require(request)
        base = self.base_url(request)
        if signed.key is not None:
            key = signed.key
            models = tuple(self.chat_models(key.namespace, key.spec.models))
            target = connect.Target(base, models, key.status.key_hint)
            view = connecting.ConnectView(key.namespace, [], [], key.name, target, by_key=True)
            return html(connecting.connect_page(signed.viewer, view))
        who = signed.person
        assert who is not None
        allowed, _ = await self.namespaces(who, AIKEYS)
        params = request.query_params
        ns = params.get("namespace") or ""
        if not NAMESPACE.match(ns) or ns == "*":
            ns = self.default_namespace(who, allowed)
        try:
            listed = await person.list_keys(self.client(signed), ns)
        except ApiError as err:  # nothing of a namespace the person may not read
            view = connecting.ConnectView(ns, allowed, [], "", connect.Target(base), error=api_message(err))
            return html(connecting.connect_page(signed.viewer, view), api_status(err))
        mine = [k for k in listed if (k.get("spec") or {}).get("owner") == who.username]
        chosen = params.get("key", "")
        picked = [k for k in mine if k["metadata"]["name"] == chosen] or mine
        if len(picked) == len(mine):
            chosen = ""
        specs = [k.get("spec") or {} for k in picked]
        patterns = [] if any(not s.get("models") for s in specs) else [m for s in specs for m in s["models"]]
        hint = (picked[0].get("status") or {}).get("keyHint") if len(picked) == 1 else None
        note = None
        if not mine:
            note = (
                f"You have no key in {ns} yet: create one on AI Keys. Meanwhile these are the models "
                "the namespace can reach."
            )
        target = connect.Target(base, tuple(self.chat_models(ns, patterns)), hint)
        names = [(k["metadata"]["name"], (k.get("status") or {}).get("keyHint")) for k in mine]
        view = connecting.ConnectView(ns, allowed, names, chosen, target, note)
        return html(connecting.connect_page(signed.viewer, view))

    # --- AI Usage -------------------------------------------------------------------------------

    async def _usage_scope(self, request: Request) -> tuple[Signed, str, list[str], bool, GroupBy, int]:
        signed = await self.require(request)
        params = request.query_params
        days, by = _days(params.get("days")), _group(params.get("by"))
        if signed.key is not None:
            return signed, signed.key.namespace, [], False, by, days
        assert signed.person is not None
        allowed, everywhere = await self.namespaces(signed.person, USAGE)
        ns = params.get("namespace") or self.default_namespace(signed.person, allowed)
        if not NAMESPACE.match(ns):
            ns = self.default_namespace(signed.person, allowed)
        return signed, ns, allowed, everywhere, by, days

    @handled
    async def usage(self, request: Request) -> Response:
        signed, ns, allowed, everywhere, by, days = await self._usage_scope(request)
        try:
            result, allocations = await self.usage_report(signed, ns, by, days)
        except errors.GatewayError as err:
            picker = pages.namespace_picker(
                "/ui/usage", allowed, ns, {"days": str(days), "by": by.value}, everywhere
            )
            body = pages.layout(
                "AI Usage", f"<h1>AI Usage</h1>{picker}{pages.notice(err.message)}", signed.viewer, "usage"
            )
            return html(body, err.status)
        json_url = pages.url("/ui/usage.json", namespace=None if signed.key else ns, days=days, by=by.value)
        page = pages.usage_page(signed.viewer, result, ns, allowed, everywhere, allocations, json_url)
        return html(page)

    @handled
    async def usage_json(self, request: Request) -> Response:
        """The page's report as JSON: the same document as GET /api/usage."""
        if await self.signed(request) is None:
            return errors.unauthorized("Sign in first.").response("")
        signed, ns, _, _, by, days = await self._usage_scope(request)
        try:
            result, _ = await self.usage_report(signed, ns, by, days)
        except errors.GatewayError as err:
            return err.response("")
        return JSONResponse(result.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

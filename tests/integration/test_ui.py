"""The web pages over HTTP, on the real control plane: sign-in, cookies, CSRF, each person's own
RBAC, keys shown once, revocation, and usage that matches /api/usage and the ledger."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import time

import httpx
import openai
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess

from aikeys.ledger.store import Allocation, Ledger, connect
from aikeys.money import format_usd
from aikeys.periods import Period
from tests.integration.kube import gateway_knows, get, wait_for
from tests.integration.ui_world import (
    NS,
    OTHER,
    People,
    browser,
    csrf_of,
    log_of,
    people,
    sign_in,
    ui_gateway,
)

pytestmark = pytest.mark.integration
__all__ = ["people", "ui_gateway"]  # fixtures
ALICE = f"system:serviceaccount:{NS}:alice"
KEY = re.compile(r'<code id="new-key">(aik_[A-Za-z0-9]+)</code>')


def cookie_header(response: httpx.Response, name: str) -> str:
    found = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(f"{name}=")]
    assert found, f"no {name} cookie set"
    return found[0]


def create(client: httpx.Client, name: str, **fields: str) -> httpx.Response:
    page = client.get("/ui/keys", params={"namespace": NS})
    form = {"csrf": csrf_of(page.text), "namespace": NS, "name": name, "allocation": "team", "ttl": "30d"}
    return client.post("/ui/keys/create", data={**form, **fields})


def test_pages_are_off_by_default(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/ui/login").status_code == 404


def test_sign_in_cookie_flags_and_csrf(ui_gateway: GatewayProcess, people: People) -> None:
    gw = ui_gateway
    client = browser(gw)
    assert client.get("/ui/keys").headers["location"] == "/ui/login"  # not signed in
    form = client.get("/ui/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    assert "script-src 'self'" in form.headers["content-security-policy"]
    login_cookie = cookie_header(form, "aikeys_login").lower()
    assert "httponly" in login_cookie and "samesite=strict" in login_cookie and "secure" not in login_cookie
    csrf = csrf_of(form.text)
    # sign-in itself needs the form's CSRF token, from this origin
    assert client.post("/ui/login", data={"credential": people.alice}).status_code == 403
    assert client.post("/ui/login", data={"csrf": "forged", "credential": people.alice}).status_code == 403
    evil = client.post(
        "/ui/login",
        data={"csrf": csrf, "credential": people.alice},
        headers={"Origin": "https://evil.example"},
    )
    assert evil.status_code == 403 and "aikeys_session" not in evil.headers.get("set-cookie", "")
    bad = client.post("/ui/login", data={"csrf": csrf, "credential": "not-a-token"})
    assert bad.status_code == 401 and "did not accept this token" in bad.text
    assert "aikeys_session" not in bad.headers.get("set-cookie", "")
    ok = client.post("/ui/login", data={"csrf": csrf, "credential": people.alice})
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/keys"
    session = cookie_header(ok, "aikeys_session")
    flags = session.lower()
    assert (
        "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags and "secure" not in flags
    )
    max_age = int(re.search(r"max-age=(\d+)", flags).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 2 * 3600  # never longer than the token (2h)
    # the sign-in form's cookie is cleared with the attributes it was set with (a browser matches them)
    cleared = cookie_header(ok, "aikeys_login").lower()
    assert cleared.startswith('aikeys_login="";') and "max-age=0" in cleared
    assert "httponly" in cleared and "samesite=strict" in cleared and "path=/ui" in cleared
    assert "secure" not in cleared
    value = session.split(";")[0].split("=", 1)[1]
    for form_of_token in (people.alice, base64.b64encode(people.alice.encode()).decode()[:40]):
        assert form_of_token not in value  # sealed: the token cannot be read out of the cookie
    keys = client.get("/ui/keys")
    assert keys.status_code == 200 and ALICE in keys.text
    assert keys.headers["cache-control"] == "no-store" and keys.headers["x-frame-options"] == "DENY"
    # a cookie that was tampered with is no session
    tampered = browser(gw)
    tampered.cookies.set("aikeys_session", value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB"))
    assert tampered.get("/ui/keys").status_code == 303
    # over TLS (a proxy in front says so) the cookies are Secure
    tls = browser(gw, **{"X-Forwarded-Proto": "https"})
    tls_form = tls.get("/ui/login")
    assert "secure" in cookie_header(tls_form, "aikeys_login").lower()
    tls.cookies.set("aikeys_login", csrf_of(tls_form.text))  # httpx keeps Secure cookies off plain http
    tls_ok = tls.post("/ui/login", data={"csrf": csrf_of(tls_form.text), "credential": people.alice})
    assert "; secure" in cookie_header(tls_ok, "aikeys_session").lower()
    tls_cleared = cookie_header(tls_ok, "aikeys_login").lower()
    assert "max-age=0" in tls_cleared and "samesite=strict" in tls_cleared and "; secure" in tls_cleared
    # signing out needs the session's CSRF token too
    assert client.post("/ui/logout", data={}).status_code == 403
    out = client.post("/ui/logout", data={"csrf": csrf_of(keys.text)})
    assert out.status_code == 303
    ended = cookie_header(out, "aikeys_session").lower()
    assert ended.startswith('aikeys_session="";') and "max-age=0" in ended
    assert "httponly" in ended and "samesite=strict" in ended and "path=/ui" in ended


def test_keys_with_the_persons_own_rbac(
    control_plane: ControlPlane, ui_gateway: GatewayProcess, people: People
) -> None:
    gw = ui_gateway
    alice = sign_in(gw, people.alice)
    page = alice.get("/ui/keys")
    assert page.status_code == 200
    assert f'<option value="{NS}" selected>' in page.text and f'<option value="{OTHER}"' not in page.text
    assert '<option value="team">' in page.text and '<option value="research">' in page.text
    theirs = alice.get("/ui/keys", params={"namespace": OTHER})
    assert theirs.status_code == 403
    assert "cannot list resource &quot;aikeys&quot;" in theirs.text
    # a change without the session's CSRF token does nothing
    no_csrf = alice.post(
        "/ui/keys/create", data={"namespace": NS, "name": "sneaky", "allocation": "team", "ttl": "1d"}
    )
    assert no_csrf.status_code == 403 and get(control_plane, "aikey", "sneaky", NS) is None
    other_site = alice.post(
        "/ui/keys/create",
        data={"csrf": csrf_of(page.text), "namespace": NS, "name": "sneaky", "allocation": "team"},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403 and get(control_plane, "aikey", "sneaky", NS) is None
    # creating in a namespace without rights: the API server says no, readably
    refused = alice.post(
        "/ui/keys/create",
        data={"csrf": csrf_of(page.text), "namespace": OTHER, "name": "elsewhere", "allocation": "team"},
    )
    assert refused.status_code == 403 and "The cluster refused" in refused.text


def test_create_shows_the_key_once_and_it_works(
    control_plane: ControlPlane, ui_gateway: GatewayProcess, people: People
) -> None:
    gw = ui_gateway
    alice = sign_in(gw, people.alice)
    created = create(alice, "web-alice", description="Alice from the browser", models=f"{NS}:mock/*")
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = KEY.search(created.text).group(1)  # type: ignore[union-attr]
    assert created.text.count(key) == 2  # the key box and the environment snippet, nothing else
    assert f"{NS}:mock/chat" in created.text  # the snippets name a model the key may use
    obj = get(control_plane, "aikey", "web-alice", NS)
    assert obj is not None and obj["spec"]["owner"] == ALICE and obj["spec"]["ttl"] == "30d"
    assert get(control_plane, "secret", "aikey-web-alice", NS) is None  # only the hash remains
    listing = alice.get("/ui/keys")
    assert (
        "web-alice" in listing.text and key not in listing.text and "Alice from the browser" in listing.text
    )
    gateway_knows(gw.openai_url, key)
    reply = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0).chat.completions.create(
        model=f"{NS}:mock/chat", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
    )
    assert reply.choices[0].message.content
    # the server-side filter (the page filters as you type with JavaScript, too)
    create(alice, "web-batch", description="nightly batch")
    filtered = alice.get("/ui/keys", params={"namespace": NS, "q": "batch"})
    assert "web-batch" in filtered.text and "web-alice" not in filtered.text


def test_disable_rotate_revoke(
    control_plane: ControlPlane, ui_gateway: GatewayProcess, people: People
) -> None:
    gw = ui_gateway
    alice = sign_in(gw, people.alice)
    key = KEY.search(create(alice, "web-cycle").text).group(1)  # type: ignore[union-attr]
    gateway_knows(gw.openai_url, key)
    client = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0)

    def post(verb: str, **extra: str) -> httpx.Response:
        page = alice.get("/ui/keys")
        return alice.post(
            f"/ui/keys/{verb}",
            data={"csrf": csrf_of(page.text), "namespace": NS, "name": "web-cycle", **extra},
        )

    def refused() -> bool:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return True
        return False

    assert post("disable").status_code == 200
    wait_for(refused, 2, "the disabled key to be refused")
    assert post("enable").status_code == 200
    wait_for(lambda: not refused(), 2, "the enabled key to work again")
    asked = post("rotate")
    assert asked.status_code == 200 and "Rotate" in asked.text and "aik_" not in asked.text  # asks first
    rotated = post("rotate", confirm="yes")
    new_key = KEY.search(rotated.text).group(1)  # type: ignore[union-attr]
    assert new_key != key and "keeps working until" in rotated.text
    confirm = post("revoke")
    assert "Revoke" in confirm.text and get(control_plane, "aikey", "web-cycle", NS) is not None
    started = time.monotonic()
    done = post("revoke", confirm="yes")
    assert done.status_code == 200 and "Revoked" in done.text
    new_client = openai.OpenAI(base_url=gw.openai_url, api_key=new_key, max_retries=0)

    def new_refused() -> bool:
        try:
            new_client.models.list()
        except openai.AuthenticationError:
            return True
        return False

    wait_for(new_refused, 1.0, "the revoked key to get 401")
    assert time.monotonic() - started < 3


def test_usage_matches_the_api_and_the_ledger(
    ui_gateway: GatewayProcess, people: People, redis_server: RedisServer
) -> None:
    gw = ui_gateway
    alice = sign_in(gw, people.alice)
    key = KEY.search(create(alice, "web-usage").text).group(1)  # type: ignore[union-attr]
    gateway_knows(gw.openai_url, key)
    client = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0)
    for words in ("one", "two words", "three words here"):
        client.chat.completions.create(
            model=f"{NS}:mock/chat", messages=[{"role": "user", "content": words}], max_tokens=5
        )
    page = alice.get("/ui/usage", params={"days": 7, "by": "owner"})
    assert page.status_code == 200
    for by in ("model", "key", "allocation", "owner"):
        mine = alice.get("/ui/usage.json", params={"namespace": NS, "days": 7, "by": by}).json()
        api = httpx.get(
            f"{gw.url}/api/usage",
            params={"namespace": NS, "days": 7, "group_by": by},
            headers={"Authorization": f"Bearer {people.alice}"},
        ).json()
        assert mine == api  # one source of truth
    report = alice.get("/ui/usage.json", params={"namespace": NS, "days": 7, "by": "owner"}).json()
    assert any(g["name"] == ALICE for g in report["groups"])

    async def ledger_total() -> int:
        redis = connect(redis_server.url)
        try:
            ledger = Ledger(redis)
            days = [
                (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(7)
            ]
            rows = []
            for name in ("team", "research"):
                rows += await ledger.usage(Allocation(NS, name, 1, Period.NONE), days)
            return sum(r.cost for r in rows)
        finally:
            await redis.aclose()

    total = format_usd(asyncio.run(ledger_total()))
    assert report["totals"]["cost_usd"] == total
    assert f'title="{total} USD"' in page.text  # the page's total spend is the ledger's
    assert "<svg" in page.text and "Spend per day" in page.text and ALICE in page.text


def test_a_token_without_rbac_sees_nothing(ui_gateway: GatewayProcess, people: People) -> None:
    nobody = sign_in(ui_gateway, people.nobody)
    keys = nobody.get("/ui/keys", params={"namespace": NS})
    assert keys.status_code == 403 and "web-" not in keys.text
    assert f'<option value="{NS}">' not in keys.text  # the picker offers only what one may list
    usage = nobody.get("/ui/usage", params={"namespace": NS})
    assert usage.status_code == 403 and "USD" not in usage.text
    assert "may not list keyusages.usage.aikeys.dev in namespace" in usage.text
    assert nobody.get("/ui/usage.json", params={"namespace": NS}).status_code == 403
    assert nobody.get("/ui/usage.json", params={"namespace": "*"}).status_code == 403


def test_the_usage_page_needs_the_usage_right_alone(
    control_plane: ControlPlane, ui_gateway: GatewayProcess, people: People
) -> None:
    """The AI Usage page asks what /api/usage and `kubectl get keyusages` ask: list keyusages."""
    cp = control_plane
    tokens = {}
    for who, resource in (("usage-only", "keyusages.usage.aikeys.dev"), ("keys-only", "aikeys.aikeys.dev")):
        cp.kubectl("create", "serviceaccount", who, "-n", NS)
        cp.kubectl("create", "role", who, "-n", NS, "--verb=get,list", f"--resource={resource}")
        cp.kubectl("create", "rolebinding", who, "-n", NS, f"--role={who}", f"--serviceaccount={NS}:{who}")
        tokens[who] = cp.kubectl("create", "token", who, "-n", NS).stdout.strip()
    reader = sign_in(ui_gateway, tokens["usage-only"])
    page = reader.get("/ui/usage")
    assert page.status_code == 200 and "Spend per day" in page.text
    assert f'<option value="{NS}" selected>' in page.text and f'<option value="{OTHER}"' not in page.text
    assert reader.get("/ui/usage.json", params={"namespace": NS}).status_code == 200
    assert reader.get("/ui/usage.json", params={"namespace": OTHER}).status_code == 403
    manager = sign_in(ui_gateway, tokens["keys-only"])
    assert manager.get("/ui/keys", params={"namespace": NS}).status_code == 200
    usage = manager.get("/ui/usage", params={"namespace": NS})
    assert usage.status_code == 403 and "USD" not in usage.text
    assert (
        f"may not list keyusages.usage.aikeys.dev in namespace {NS}, so may not read its usage." in usage.text
    )


def test_an_ai_key_sees_only_itself(ui_gateway: GatewayProcess, people: People) -> None:
    gw = ui_gateway
    alice = sign_in(gw, people.alice)
    key = KEY.search(create(alice, "web-self").text).group(1)  # type: ignore[union-attr]
    gateway_knows(gw.openai_url, key)
    openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0).chat.completions.create(
        model=f"{NS}:mock/chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    holder = sign_in(gw, key)
    page = holder.get("/ui/keys")
    assert page.status_code == 200 and f"{NS}/web-self" in page.text and "web-alice" not in page.text
    assert 'title="50.00 USD"' in page.text  # the allocation's budget
    usage = holder.get("/ui/usage.json", params={"by": "key"}).json()
    assert [g["name"] for g in usage["groups"]] == [f"{NS}/web-self"]
    assert (
        holder.get("/ui/usage.json", params={"namespace": OTHER, "by": "key"}).json() == usage
    )  # its own, whatever asked
    refused = holder.post(
        "/ui/keys/create",
        data={"csrf": csrf_of(page.text), "namespace": NS, "name": "from-key", "allocation": "team"},
    )
    assert refused.status_code == 403 and "Kubernetes token" in refused.text


def test_my_keys_first_and_actions_only_where_the_policy_allows(
    control_plane: ControlPlane, ui_gateway: GatewayProcess, people: People
) -> None:
    """AI Keys shows the person's own keys; the switch shows the namespace's, with Disable / Rotate /
    Revoke only on their own, or on every key for holders of the owner exception. The admission
    policy still decides: a forged form is refused by the API server."""
    gw = ui_gateway
    bob, alice, boss = (sign_in(gw, t) for t in (people.bob, people.alice, people.boss))
    assert create(bob, "mine-bob").status_code == 201
    assert create(alice, "mine-alice").status_code == 201
    own = alice.get("/ui/keys", params={"namespace": NS})
    assert "mine-alice" in own.text and "mine-bob" not in own.text
    assert "My keys (" in own.text and 'aria-label="Revoke mine-alice"' in own.text
    every = alice.get("/ui/keys", params={"namespace": NS, "all": "1"})
    assert "mine-alice" in every.text and "mine-bob" in every.text
    assert 'aria-label="Revoke mine-alice"' in every.text
    for verb in ("Disable", "Rotate", "Revoke"):
        assert f'aria-label="{verb} mine-bob"' not in every.text
    forged = alice.post(
        "/ui/keys/revoke",
        data={"csrf": csrf_of(every.text), "namespace": NS, "name": "mine-bob", "confirm": "yes", "all": "1"},
    )
    assert forged.status_code == 403 and "The cluster refused" in forged.text
    assert get(control_plane, "aikey", "mine-bob", NS) is not None
    chief = boss.get("/ui/keys", params={"namespace": NS, "all": "1"})
    assert 'aria-label="Revoke mine-bob"' in chief.text and 'aria-label="Revoke mine-alice"' in chief.text
    assert "mine-bob" not in boss.get("/ui/keys", params={"namespace": NS}).text  # not boss's own
    done = boss.post(
        "/ui/keys/disable",
        data={"csrf": csrf_of(chief.text), "namespace": NS, "name": "mine-bob", "all": "1"},
    )
    assert done.status_code == 200 and "Disabled" in done.text and "mine-alice" in done.text  # still all
    assert get(control_plane, "aikey", "mine-bob", NS)["spec"]["disabled"] is True  # type: ignore[index]


def test_connect_names_chat_models_and_never_the_key(ui_gateway: GatewayProcess, people: People) -> None:
    gw = ui_gateway
    alice = sign_in(gw, people.alice)
    created = create(alice, "connect-alice", models=f"{NS}:mock/*")
    key = KEY.search(created.text).group(1)  # type: ignore[union-attr]
    # the created key's page: the key in its box and the environment snippet; chat models only
    assert created.text.count(key) == 2 and "ada-embedding" not in created.text
    assert f"export AIKEYS_API_KEY={key}" in created.text
    page = alice.get("/ui/connect", params={"namespace": NS, "key": "connect-alice"})
    assert page.status_code == 200 and key not in page.text and "aik_" in page.text  # the hint only
    hint = get_hint(page.text)
    assert key.startswith(hint.split("…")[0]) and key.endswith(hint.split("…")[1])
    for tool in ("open-webui", "opencode", "kilo-code", "cursor", "codex", "openai-python", "openai-node"):
        section = re.search(rf'id="tool-{tool}".*?</section>', page.text, re.S)
        assert section and f"{NS}:mock/chat" in section.group(0), tool
    assert "ada-embedding" not in page.text
    # Cursor needs a public HTTPS URL: this one (the browser's, http on loopback) is not
    assert "is not a public HTTPS address" in page.text
    assert f'<code id="base-url">{gw.openai_url}</code>' in page.text
    # behind a proxy: the URL the browser reached us by
    proxied = alice.get(
        "/ui/connect", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ai.example.com"}
    )
    assert '<code id="base-url">https://ai.example.com/api/openai/v1</code>' in proxied.text
    assert "is not a public HTTPS address" not in proxied.text
    # signed in with the key itself: that key's settings
    holder = sign_in(gw, key)
    own = holder.get("/ui/connect")
    assert own.status_code == 200 and key not in own.text and hint in own.text
    assert f"{NS}:mock/chat" in own.text and "ada-embedding" not in own.text
    # nobody sees nothing of a namespace they may not read
    nobody = sign_in(gw, people.nobody).get("/ui/connect", params={"namespace": NS})
    assert nobody.status_code == 403 and f"{NS}:mock/chat" not in nobody.text


def get_hint(page: str) -> str:
    found = re.search(r"your key (aik_[A-Za-z0-9]*…[A-Za-z0-9]+)", page)
    assert found, "no key hint on the page"
    return found.group(1)


def test_behind_an_auth_proxy(ui_gateway: GatewayProcess, people: People) -> None:
    """An authenticating proxy forwards the person's token with every request: no cookie at all."""
    proxied = browser(ui_gateway, Authorization=f"Bearer {people.alice}")
    page = proxied.get("/ui/keys")
    assert page.status_code == 200 and ALICE in page.text and "set-cookie" not in page.headers
    no_csrf = proxied.post("/ui/keys/disable", data={"namespace": NS, "name": "web-alice"})
    assert no_csrf.status_code == 403
    ok = proxied.post(
        "/ui/keys/disable", data={"csrf": csrf_of(page.text), "namespace": NS, "name": "web-alice"}
    )
    assert ok.status_code == 200 and "Disabled" in ok.text


def test_no_token_or_key_in_logs_or_urls(ui_gateway: GatewayProcess, people: People) -> None:
    log = log_of(ui_gateway)
    assert people.alice not in log and people.nobody not in log
    assert "aik_" not in log
    assert "/ui/keys" in log  # the access log has the routes, and nothing of the credentials

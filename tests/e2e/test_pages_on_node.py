"""The web pages as `helm install` leaves them on the real node: on by default, through the Ingress
(/ui), with the chart's secure defaults — sign-in required, sealed session cookies that every gateway
replica opens (the chart's session-key Secret), same-origin forms, the Content-Security-Policy — and
the Connect page naming the chart's public URL.
"""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.e2e.conftest import E2E_TIMEOUT, Release
from tests.integration.kube import apply_allocation, apply_provider, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]
NS = "e2e-pages"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
KEY = re.compile(r'<code id="new-key">(aik_[A-Za-z0-9]+)</code>')


def csrf(page: str) -> str:
    found = CSRF.search(page)
    assert found, page[:2000]
    return found.group(1)


def person(release: Release) -> str:
    """A token of someone who manages keys in NS (as `edit` lets them), and nothing else."""
    cp = release.node.control_plane
    cp.kubectl("create", "namespace", NS)
    apply_provider(
        cp, NS, release.mock_url, {"text-embedding-3-small": ("0.02", "0"), "gpt-4o-mini": ("0.15", "0.60")}
    )
    apply_allocation(cp, NS, "team", "5.00")
    cp.kubectl("create", "serviceaccount", "pat", "-n", NS)
    cp.kubectl(
        "create",
        "role",
        "keys",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=aikeys.aikeys.dev,allocations.aikeys.dev,secrets",
    )
    cp.kubectl("create", "rolebinding", "keys", "-n", NS, "--role=keys", f"--serviceaccount={NS}:pat")
    return cp.kubectl("create", "token", "pat", "-n", NS).stdout.strip()


def test_sign_in_through_the_ingress_create_a_key_and_connect(release: Release) -> None:
    ingress = release.node.ingress_url
    token = person(release)
    browser = httpx.Client(base_url=ingress, follow_redirects=False, timeout=30)
    # sign-in required: every page sends a stranger to the form
    assert browser.get("/ui/keys").headers["location"] == "/ui/login"
    form = browser.get("/ui/login")
    assert form.status_code == 200
    for header, value in (("x-frame-options", "DENY"), ("cache-control", "no-store")):
        assert form.headers[header] == value
    assert "default-src 'none'" in form.headers["content-security-policy"]
    signed = browser.post("/ui/login", data={"csrf": csrf(form.text), "credential": token})
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/keys", signed.text[:2000]
    cookie = next(v for k, v in signed.headers.multi_items() if k == "set-cookie" and "aikeys_session=" in v)
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    # two gateway replicas behind the Ingress open the same sealed session (the chart's Secret)
    for _ in range(8):
        keys = browser.get("/ui/keys", params={"namespace": NS})
        assert keys.status_code == 200 and f"system:serviceaccount:{NS}:pat" in keys.text
    # a form from another site is refused; from the page, a key is created and shown once
    create = {
        "csrf": csrf(keys.text),
        "namespace": NS,
        "name": "pats-laptop",
        "allocation": "team",
        "ttl": "1d",
    }
    forged = browser.post("/ui/keys/create", data=create, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403
    created = browser.post("/ui/keys/create", data=create)
    assert created.status_code == 201, created.text[:2000]
    found = KEY.search(created.text)
    assert found
    key = found.group(1)
    assert "text-embedding-3-small" not in created.text  # the snippets name the chat model
    client = openai.OpenAI(base_url=release.openai_url, api_key=key, max_retries=0, timeout=30)

    def works() -> bool:
        try:
            client.models.list()
        except openai.APIStatusError:
            return False
        return True

    wait_for(works, 30, "the new key to work through the Ingress")
    reply = client.chat.completions.create(
        model=f"{NS}:mock/gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert reply.choices[0].message.content
    # Connect: the chart's public URL, the chat model, never the key
    connect = browser.get("/ui/connect", params={"namespace": NS, "key": "pats-laptop"})
    assert connect.status_code == 200
    assert f'<code id="base-url">{release.openai_url}</code>' in connect.text
    assert f"{NS}:mock/gpt-4o-mini" in connect.text and "text-embedding-3-small" not in connect.text
    assert key not in connect.text and "is not a public HTTPS address" in connect.text  # Cursor
    mine = browser.get("/ui/keys", params={"namespace": NS})
    assert 'aria-label="Revoke pats-laptop"' in mine.text
    out = browser.post("/ui/logout", data={"csrf": csrf(mine.text)})
    assert out.status_code == 303
    assert browser.get("/ui/keys").headers["location"] == "/ui/login"

"""The web pages in a real headless Chromium (Debian's, driven by playwright-core; nothing downloads a
browser): sign in with a ServiceAccount token, create a key (shown once, never again), use it with
the OpenAI SDK, filter the list, revoke (401 within a second), read the usage page against the
ledger; a token without RBAC sees nothing; my keys first, and the Connect page. Screenshots of the
pages are saved (AIKEYS_SCREENSHOTS names a folder to copy them to; docs/using.md's come from such a
run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from aikeys_dev.devstack.services import GatewayProcess

from aikeys import connect
from aikeys import keys as aikeys_keys
from tests.integration.chromium import Browser, browser, playwright_dir
from tests.integration.kube import gateway_knows, wait_for
from tests.integration.ui_world import NS, People, csrf_of, people, ui_gateway
from tests.integration.ui_world import sign_in as http_sign_in

pytestmark = pytest.mark.integration
__all__ = ["browser", "people", "playwright_dir", "ui_gateway"]  # fixtures
ALICE = f"system:serviceaccount:{NS}:alice"


def keep(shot: Path) -> None:
    """Copy a screenshot to AIKEYS_SCREENSHOTS, when set (docs/using.md's pictures come from such a run)."""
    target = os.environ.get("AIKEYS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


def sign_in(b: Browser, gw: GatewayProcess, credential: str) -> None:
    assert b("goto", url=f"{gw.url}/ui/")["url"].endswith("/ui/login")
    b("fill", selector="#credential", value=credential)
    landed = b("navigate", selector="button[type=submit]")
    assert landed.endswith("/ui/keys"), b("html")[:3000]


def create_in_browser(
    b: Browser, name: str, description: str, allocation: str = "team", models: str = ""
) -> str:
    if not b("evaluate", expression="document.querySelector('details.create').open"):
        b("click", selector="details.create summary")
    b("fill", selector="#new-name", value=name)
    b("select", selector="#new-allocation", value=allocation)
    b("fill", selector="#new-description", value=description)
    if models:
        b("fill", selector="#new-models", value=models)
    b("navigate", selector="form[action='/ui/keys/create'] button[type=submit]")
    key: str = b("text", selector="#new-key")
    assert key.startswith("aik_")
    return key


def refused(gw: GatewayProcess, key: str) -> bool:
    try:
        openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0).models.list()
    except openai.AuthenticationError:
        return True
    return False


def test_keys_and_usage_in_chromium(
    browser: Browser, ui_gateway: GatewayProcess, people: People, tmp_path: Path
) -> None:
    b, gw = browser, ui_gateway
    b("grant", origin=gw.url)
    sign_in(b, gw, people.alice)
    # the session cookie: HttpOnly (no script reads it), SameSite=Strict, only for /ui
    cookies = {c["name"]: c for c in b("cookies")}
    session = cookies["aikeys_session"]
    assert (session["httpOnly"], session["sameSite"], session["path"]) == (True, "Strict", "/ui")
    assert people.alice not in session["value"]
    assert "aikeys_session" not in b("evaluate", expression="document.cookie")

    # create a key: shown once, with a working copy button
    key = create_in_browser(b, "laptop", "Alice's laptop")
    assert "shown only once" in b("text", selector=".once h2")
    b("click", selector="button[data-copy=new-key]")
    assert b("evaluate", expression="navigator.clipboard.readText()") == key
    shot = tmp_path / "ui-new-key.png"
    b("screenshot", path=str(shot), fullPage=False)
    # reloading (or going back to the list) never shows it again
    b("reload")  # re-sends the form: the key exists already, and is not shown
    assert key not in b("html") and "already exists" in b("text", selector=".notice.error")
    assert all("409" in error for error in b("errors"))
    b("goto", url=f"{gw.url}/ui/keys")
    assert key not in b("html")
    # it works with the OpenAI SDK, and its usage is generated
    gateway_knows(gw.openai_url, key)
    client = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0)
    for prompt in ("Summarise the design doc", "Write a haiku about budgets", "Explain reserve and settle"):
        client.chat.completions.create(
            model=f"{NS}:mock/chat", messages=[{"role": "user", "content": prompt}], max_tokens=12
        )
    create_in_browser(b, "ci-runner", "evaluation jobs of the CI", allocation="research")
    b("goto", url=f"{gw.url}/ui/keys")

    # the list and the filter (as you type)
    rows = b("visible", selector="#keys-table tbody tr[data-search] th .name")
    assert {"laptop", "ci-runner"} <= set(rows)
    b("type", selector="#filter", value="laptop")
    assert b("visible", selector="#keys-table tbody tr[data-search] th .name") == ["laptop"]
    assert b("text", selector="#filter-count").startswith("1 of ")
    b("fill", selector="#filter", value="")
    b("type", selector="#filter", value="evaluation")
    assert b("visible", selector="#keys-table tbody tr[data-search] th .name") == ["ci-runner"]
    b("fill", selector="#filter", value="")
    b("evaluate", expression="document.getElementById('filter').dispatchEvent(new Event('input'))")
    keys_shot = tmp_path / "ui-keys.png"
    b("screenshot", path=str(keys_shot))
    keep(keys_shot)

    # usage: totals equal the ledger's (read through /api/usage with the same token)
    b("navigate", selector="nav[aria-label=Main] a[href='/ui/usage']")
    b("navigate", selector="nav[aria-label='Break down by'] a:has-text('Owner')")
    api = httpx.get(
        f"{gw.url}/api/usage",
        params={"namespace": NS, "days": 7, "group_by": "owner"},
        headers={"Authorization": f"Bearer {people.alice}"},
    ).json()
    spend = b("evaluate", expression="document.querySelector('#total-spend .usd').title")
    assert spend == f"{api['totals']['cost_usd']} USD"
    assert b("text", selector="#total-requests") == f"{api['totals']['requests']:,}"
    breakdown = b("visible", selector="#breakdown tbody th")
    assert ALICE in breakdown
    b("navigate", selector="nav[aria-label=Period] a:has-text('30 days')")
    assert "days=30" in b("url")
    usage_shot = tmp_path / "ui-usage.png"
    b("screenshot", path=str(usage_shot))
    keep(usage_shot)
    b("viewport", width=390, height=844)  # a phone
    phone_shot = tmp_path / "ui-usage-phone.png"
    b("screenshot", path=str(phone_shot), fullPage=False)
    keep(phone_shot)
    b("viewport", width=1280, height=900)

    # revoke with confirmation: the key gets 401 within a second
    b("goto", url=f"{gw.url}/ui/keys")
    started = time.monotonic()
    b("navigate", selector="button[aria-label='Revoke laptop']")
    assert any("Revoke laptop?" in d for d in b("dialogs"))
    assert "Revoked" in b("text", selector=".notice.ok")
    wait_for(lambda: refused(gw, key), 1.0, "the revoked key to get 401")
    assert time.monotonic() - started < 5
    assert "laptop" not in b("visible", selector="#keys-table tbody tr[data-search] th .name")
    errors = b("errors")
    assert errors == [], errors  # no script error, no Content-Security-Policy violation
    keep(shot)

    # sign out; a token without RBAC sees nothing of the namespace
    b("navigate", selector="form[action='/ui/logout'] button")
    sign_in(b, gw, people.nobody)
    b("goto", url=f"{gw.url}/ui/keys?namespace={NS}")
    assert "The cluster refused" in b("text", selector=".notice.error")
    assert b("visible", selector="#keys-table tbody tr[data-search]") == []
    b("goto", url=f"{gw.url}/ui/usage?namespace={NS}")
    assert "may not list keyusages" in b("text", selector=".notice.error")
    assert "total-spend" not in b("html")


def test_connect_and_my_keys_in_chromium(
    browser: Browser, ui_gateway: GatewayProcess, people: People, tmp_path: Path
) -> None:
    """AI Keys shows my keys first, the namespace's behind a switch, with actions only on mine; the
    Connect page has each tool's section with a chat model (never the embeddings one that sorts
    first), never the key, and exactly the generator's snippets — the ones the client tests run.
    Its Python snippet, copied and run with the key, answers."""
    b, gw = browser, ui_gateway
    bob = http_sign_in(gw, people.bob)
    page = bob.get("/ui/keys", params={"namespace": NS})
    form = {"csrf": csrf_of(page.text), "namespace": NS, "name": "bob-laptop", "allocation": "team"}
    assert bob.post("/ui/keys/create", data=form).status_code == 201
    b("grant", origin=gw.url)
    sign_in(b, gw, people.alice)
    # the namespace's models (other tests' providers shared with every namespace stay out)
    key = create_in_browser(b, "alice-tools", "Alice's tools", models=f"{NS}:mock/*")

    b("goto", url=f"{gw.url}/ui/keys")
    names = set(b("visible", selector="#keys-table tbody tr[data-search] th .name"))
    assert "alice-tools" in names and "bob-laptop" not in names
    b("navigate", selector="nav[aria-label='Whose keys'] a:has-text('All keys')")
    names = set(b("visible", selector="#keys-table tbody tr[data-search] th .name"))
    assert {"alice-tools", "bob-laptop"} <= names
    buttons = "document.querySelectorAll(\"button[aria-label='{} {}']\").length"
    for verb in ("Disable", "Rotate", "Revoke"):
        assert b("evaluate", expression=buttons.format(verb, "alice-tools")) == 1
        assert b("evaluate", expression=buttons.format(verb, "bob-laptop")) == 0

    b("navigate", selector="nav[aria-label=Main] a[href='/ui/connect']")
    b("goto", url=f"{gw.url}/ui/connect?namespace={NS}&key=alice-tools")
    assert key not in b("html")
    target = connect.Target(gw.openai_url, (f"{NS}:mock/chat",), hint=aikeys_keys.hint(key))
    assert b("text", selector="#models") == f"{NS}:mock/chat"
    for guide in connect.guides(target):
        section = b("text", selector=f"#tool-{guide.tool.value}")
        assert f"{NS}:mock/chat" in section and "ada-embedding" not in section, guide.tool
        for i, snippet in enumerate(guide.snippets):
            shown = b("text", selector=f"#{guide.tool.value}-{i}")
            assert shown.rstrip("\n") == snippet.text.rstrip("\n"), (guide.tool, i)
    assert b("text", selector="#key-env") == connect.key_snippet(target).text
    assert "is not a public HTTPS address" in b("text", selector="#tool-cursor")
    shot = tmp_path / "ui-connect.png"
    b("screenshot", path=str(shot), fullPage=False)
    keep(shot)

    # copy the Python snippet as a person would, and run it with the key in the environment
    b("click", selector="button[data-copy='openai-python-0']")
    code = b("evaluate", expression="navigator.clipboard.readText()")
    assert code.rstrip("\n") == connect.snippet(
        connect.guide(connect.Tool.OPENAI_PYTHON, target), "hello.py"
    ).rstrip("\n")
    (tmp_path / "hello.py").write_text(code)
    gateway_knows(gw.openai_url, key)
    ran = subprocess.run(
        [sys.executable, str(tmp_path / "hello.py")],
        env={"PATH": os.environ["PATH"], connect.KEY_VARIABLE: key},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert ran.stdout.startswith("Hello from the aikeys mock upstream model server"), ran
    errors = b("errors")
    assert errors == [], errors

"""Open WebUI 0.12.4 through the gateway (tests/clients/open_webui.py starts it once per session,
with an AI key of its own that may use one model of the namespace's two).

Its API, as scripts use it: sign in, list the models, a chat completion whole and streamed. Then as
a person uses it, in a real headless Chromium: the model menu lists exactly the key's models, under
their gateway names (`namespace:provider/model`); a message's answer streams into the page; the four
upstream calls a chat makes (its title, the answer, follow-up suggestions, tags) are each charged
exactly what the mock counted; and the key's usage, signed in to the gateway's pages with the key,
is what the two tests were charged. Open WebUI and the browser talk to loopback only."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from aikeys_dev.mockupstream import tokens

from aikeys.money import format_usd
from tests.clients.harness import CHAT_ONLY, Metered, assert_charged_as_counted, ledger, sent
from tests.clients.open_webui import (
    INSTALL_TIMEOUT,
    KEY,
    MODELS,
    STARTUP_TIMEOUT,
    VERSION,
    OpenWebUI,
    open_webui,
    open_webui_dir,
    open_webui_server,
)
from tests.integration.chromium import Browser, browser, playwright_dir
from tests.integration.kube import gateway_knows, wait_for
from tests.integration.ui_world import ui_gateway

# the first test of a session may install Open WebUI and start it
pytestmark = [pytest.mark.integration, pytest.mark.timeout(INSTALL_TIMEOUT + STARTUP_TIMEOUT + 300)]
# the fixtures this module uses
__all__ = ["browser", "open_webui", "open_webui_dir", "open_webui_server", "playwright_dir", "ui_gateway"]
ANSWER = "".join(tokens.reply_words(16))  # what the mock answers a plain question (reply_tokens)
PROMPT = "Summarise the design doc"
TASKS = ("title", "follow-up", "tags")  # what Open WebUI asks the model about a chat, besides the answer


def keep(shot: Path) -> None:
    """Copy a screenshot to AIKEYS_SCREENSHOTS, when set."""
    target = os.environ.get("AIKEYS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


def task_of(body: dict[str, Any]) -> str:
    """Which of Open WebUI's calls a request is: the answer, or one of its TASKS (their prompts
    start `### Task: Generate a concise title…`, `…Predict 3-5 useful messages…`, `…Generate 1-3
    broad tags…`)."""
    text = tokens.content_text(body["messages"][-1]["content"])
    if not text.startswith("### Task:"):
        return "answer"
    task = text.removeprefix("### Task:").strip().split(".")[0].lower()  # its first sentence
    found = [t for t, word in zip(TASKS, ("title", "messages", "tags"), strict=True) if word in task]
    assert len(found) == 1, task
    return found[0]


def test_open_webui_api(
    open_webui: OpenWebUI, mock_upstream: MockUpstreamProcess, redis_server: RedisServer
) -> None:
    token = open_webui.sign_in()
    api = httpx.Client(base_url=open_webui.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert api.get("/api/version").json()["version"] == VERSION
    listed = api.get("/api/models")
    assert listed.status_code == 200, listed.text
    assert [(m["id"], m["name"]) for m in listed.json()["data"]] == [(m, m) for m in MODELS]

    before = ledger(redis_server, KEY)
    ask = {"model": CHAT_ONLY, "messages": [{"role": "user", "content": PROMPT}]}
    whole = api.post("/api/chat/completions", json=ask)
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == ANSWER
    with api.stream("POST", "/api/chat/completions", json=ask | {"stream": True}) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e.get("choices")]
    pieces = [p for p in pieces if p]
    assert "".join(pieces) == ANSWER and len(pieces) > 1  # in pieces, as the mock sent them

    metered = assert_charged_as_counted(mock_upstream, redis_server, before, KEY)
    open_webui.charged.append(metered)
    assert [r["body"].get("stream", False) for r in metered.requests] == [False, True]
    usage = whole.json()["usage"]  # the gateway's count, passed on by Open WebUI
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == metered.counts[0]
    open_webui.assert_loopback_only()


ANSWER_TEXT = """(() => {
  const answers = document.querySelectorAll('#response-content-container');
  return answers.length ? answers[answers.length - 1].innerText.trim() : '';
})()"""
# records every text the answer shows while it arrives
WATCH_ANSWER = f"""(() => {{
  window.aikeysSeen = [];
  new MutationObserver(() => {{
    const text = {ANSWER_TEXT};
    if (text && window.aikeysSeen[window.aikeysSeen.length - 1] !== text) window.aikeysSeen.push(text);
  }}).observe(document.body, {{ subtree: true, childList: true, characterData: true }});
  return true;
}})()"""
MENU = "#model-selector-list [role=option]"
WHATS_NEW = 'button:has-text("Okay, Let\'s Go!")'


def sign_in_with_key(b: Browser, gw: GatewayProcess, key: str) -> None:
    """The gateway's pages with an AI key: that key's own usage."""
    assert b("goto", url=f"{gw.url}/ui/")["url"].endswith("/ui/login")
    b("fill", selector="#credential", value=key)
    b("navigate", selector="button[type=submit]")
    b("goto", url=f"{gw.url}/ui/usage?by=model")
    assert "Usage of this key" in b("text", selector="p.scope")


def test_open_webui_in_chromium(
    open_webui: OpenWebUI,
    browser: Browser,
    ui_gateway: GatewayProcess,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    b = browser
    mock_upstream.configure(chunk_delay_ms=40)  # the answer's 16 pieces arrive over ~0.6 s
    b("goto", url=f"{open_webui.url}/")
    # a first visit shows the release notes; "Okay, Let's Go!" closes them for good
    b("wait", selector=WHATS_NEW, timeout=120_000)
    b("click", selector=WHATS_NEW)
    b("wait", selector=WHATS_NEW, state="hidden")

    # the model menu: exactly the key's models, under their gateway names
    b("click", selector="#model-selector-model-button")
    b("wait", selector=MENU, timeout=60_000)
    options = b("evaluate", expression=f"[...document.querySelectorAll('{MENU}')].map(o => o.dataset.value)")
    assert options == MODELS
    assert b("visible", selector=f"{MENU} .line-clamp-1") == MODELS
    b("click", selector=f"{MENU}[data-value='{CHAT_ONLY}']")
    b("wait", selector=MENU, state="hidden")
    assert b("text", selector="#model-selector-model-button") == CHAT_ONLY

    # a message; its answer grows in the page as it streams
    before = ledger(redis_server, KEY)
    b("evaluate", expression=WATCH_ANSWER)
    b("fill", selector="#chat-input", value=PROMPT)
    b("press", selector="#chat-input", key="Enter")
    b("until", expression=f"{ANSWER_TEXT} === {json.dumps(ANSWER)}", timeout=120_000)
    seen = b("evaluate", expression="window.aikeysSeen")
    assert seen[-1] == ANSWER
    assert any(0 < len(text) < len(ANSWER) and ANSWER.startswith(text) for text in seen), seen
    assert "/c/" in b("url")  # the chat was saved
    shot = tmp_path / "open-webui-chat.png"
    b("screenshot", path=str(shot), fullPage=False)
    keep(shot)

    # the chat's four upstream calls, each charged what the mock counted
    wait_for(lambda: len(sent(mock_upstream)) >= 1 + len(TASKS), 120, "Open WebUI's calls about the chat")
    metered = assert_charged_as_counted(mock_upstream, redis_server, before, KEY)
    open_webui.charged.append(metered)
    bodies = [r["body"] for r in metered.requests]
    assert sorted(task_of(body) for body in bodies) == sorted(("answer", *TASKS))
    [answer] = [body for body in bodies if task_of(body) == "answer"]
    assert answer["stream"] is True
    assert all(body["stream"] is False for body in bodies if body is not answer)
    page_requests = b("requests")
    assert page_requests and all(urlsplit(u).hostname == "127.0.0.1" for u in page_requests if "://" in u)

    # the gateway's AI Usage page, signed in with the key: what both tests were charged
    spent = Metered(
        [r for m in open_webui.charged for r in m.requests],
        [c for m in open_webui.charged for c in m.counts],
        [c for m in open_webui.charged for c in m.cached],
    )
    gateway_knows(ui_gateway.openai_url, open_webui.key)

    def reported() -> dict[str, Any] | None:
        report = httpx.get(
            f"{ui_gateway.url}/api/usage", headers={"Authorization": f"Bearer {open_webui.key}"}
        ).json()
        return report if report["totals"]["requests"] >= len(spent.requests) else None

    report = wait_for(reported, 15, "the usage report to count Open WebUI's requests")
    totals = report["totals"]
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"], totals["cost_usd"]) == (
        len(spent.requests),
        sum(i for i, _ in spent.counts),
        sum(o for _, o in spent.counts),
        format_usd(spent.cost),
    )
    sign_in_with_key(b, ui_gateway, open_webui.key)
    assert b("text", selector="#total-requests") == f"{len(spent.requests):,}"
    assert b("evaluate", expression="document.querySelector('#total-spend .usd').title") == (
        f"{format_usd(spent.cost)} USD"
    )
    assert b("visible", selector="#breakdown tbody th") == [CHAT_ONLY]
    usage_shot = tmp_path / "open-webui-usage.png"
    b("screenshot", path=str(usage_shot))
    keep(usage_shot)
    open_webui.assert_loopback_only()

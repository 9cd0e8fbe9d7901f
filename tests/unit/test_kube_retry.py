"""The Kubernetes client when the API server asks it to come back later (`Retry-After`), against a
small HTTP server on loopback that answers as the API server does: 429 from API Priority and
Fairness, 504 "Too large resource version" while its watch cache catches up with etcd."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from aikeys.kube import client as kube_client
from aikeys.kube.client import ApiError, KubeClient, retry_after
from aikeys.kube.config import KubeConfig

TOO_LARGE = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "Too large resource version: 38591, current: 38498",
    "reason": "Timeout",
    "details": {"causes": [{"reason": "ResourceVersionTooLarge"}], "retryAfterSeconds": 1},
    "code": 504,
}
THROTTLED = {
    "kind": "Status",
    "status": "Failure",
    "message": "too many requests",
    "reason": "TooManyRequests",
    "code": 429,
}


def status(body: dict[str, object], retry: str | None) -> web.Response:
    headers = {"Retry-After": retry} if retry is not None else {}
    return web.json_response(body, status=int(str(body["code"])), headers=headers)


@dataclass
class Script:
    """The first `refusals` requests get `refusal()`; then `answer()`."""

    refusal: Callable[[], web.StreamResponse]
    refusals: int
    answer: Callable[[], web.StreamResponse] = lambda: web.json_response({"kind": "AIKey", "ok": True})
    seen: list[str] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, KubeClient]]:
    script = Script(lambda: status(TOO_LARGE, "0"), 0)

    async def handle(request: web.Request) -> web.StreamResponse:
        script.seen.append(request.method)
        if len(script.seen) <= script.refusals:
            return script.refusal()
        return script.answer()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    kube = KubeClient(KubeConfig(server=f"http://127.0.0.1:{port}"))
    try:
        yield script, kube
    finally:
        await kube.close()
        await runner.cleanup()


async def test_a_list_waits_as_long_as_the_server_asks_while_its_cache_catches_up(
    server: tuple[Script, KubeClient],
) -> None:
    script, kube = server
    script.refusal, script.refusals = lambda: status(TOO_LARGE, "1"), 1
    started = time.monotonic()
    listing = await kube.get("/apis/aikeys.dev/v1alpha1/aikeys", params={"limit": "500"})
    assert listing["ok"] is True
    assert script.seen == ["GET", "GET"]
    assert time.monotonic() - started >= 0.95  # Retry-After: 1 was honoured


async def test_retries_are_bounded_then_the_servers_answer_stands(server: tuple[Script, KubeClient]) -> None:
    script, kube = server
    script.refusal, script.refusals = lambda: status(THROTTLED, "0"), 1000
    with pytest.raises(ApiError) as caught:
        await kube.get("/api/v1/secrets")
    assert caught.value.status == 429 and caught.value.reason == "TooManyRequests"
    assert len(script.seen) == 1 + kube_client.MAX_RETRIES == 11  # as client-go


async def test_a_write_is_sent_again_only_when_the_server_said_429(server: tuple[Script, KubeClient]) -> None:
    script, kube = server
    script.refusal, script.refusals = lambda: status(THROTTLED, "0"), 2
    created = await kube.create("/apis/aikeys.dev/v1alpha1/namespaces/team/aikeys", {"kind": "AIKey"})
    assert created["ok"] is True and script.seen == ["POST", "POST", "POST"]

    script.seen.clear()
    script.refusal, script.refusals = lambda: status({**TOO_LARGE, "code": 503}, "0"), 1
    with pytest.raises(ApiError) as caught:  # the server may have applied it: not sent twice
        await kube.patch("/apis/aikeys.dev/v1alpha1/namespaces/team/aikeys/k", {"spec": {}})
    assert caught.value.status == 503 and script.seen == ["PATCH"]


@pytest.mark.parametrize(
    ("body", "retry"),
    [
        ({**TOO_LARGE, "code": 500, "reason": "InternalError"}, None),  # no Retry-After: no retry
        (THROTTLED, None),
        (THROTTLED, "Wed, 21 Oct 2015 07:28:00 GMT"),  # a date, which client-go does not read either
        ({**TOO_LARGE, "code": 404, "reason": "NotFound"}, "0"),  # not a status that asks to wait
    ],
)
async def test_other_answers_are_not_retried(
    server: tuple[Script, KubeClient], body: dict[str, object], retry: str | None
) -> None:
    script, kube = server
    script.refusal, script.refusals = lambda: status(body, retry), 1
    with pytest.raises(ApiError) as caught:
        await kube.get("/api/v1/secrets")
    assert caught.value.status == body["code"] and script.seen == ["GET"]


async def test_a_long_retry_after_is_capped(
    server: tuple[Script, KubeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, kube = server
    monkeypatch.setattr(kube_client, "MAX_WAIT", 0.05)
    script.refusal, script.refusals = lambda: status(THROTTLED, "3600"), 1
    started = time.monotonic()
    assert (await kube.get("/api/v1/secrets"))["ok"] is True
    assert time.monotonic() - started < 5


async def test_a_watch_starts_once_the_server_lets_it(server: tuple[Script, KubeClient]) -> None:
    script, kube = server
    events = [{"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}}]
    script.refusal, script.refusals = lambda: status(THROTTLED, "0"), 2
    script.answer = lambda: web.Response(text="".join(json.dumps(e) + "\n" for e in events))
    got = [e async for e in kube.watch("/apis/aikeys.dev/v1alpha1/aikeys", "5")]
    assert got == events and script.seen == ["GET", "GET", "GET"]


def test_retry_after_reads_whole_seconds_for_what_may_be_sent_again() -> None:
    assert retry_after("GET", 504, "1") == 1.0
    assert retry_after("GET", 503, " 2 ") == 2.0
    assert retry_after("POST", 429, "3") == 3.0
    assert retry_after("GET", 429, "3600") == kube_client.MAX_WAIT
    assert retry_after("DELETE", 500, "1") is None
    assert retry_after("GET", 429, "-1") is None
    assert retry_after("GET", 429, "1.5") is None
    assert retry_after("GET", 409, "1") is None

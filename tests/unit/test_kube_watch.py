"""The list + watch engine without a server: a scripted API (pages, watch streams, failures) and
what the gateway's informer and the operator's watch make of it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aikeys_gateway.cache.informers import Informer
from aikeys_operator.watching import Watch

from aikeys.kube.client import ApiError, KubeClient
from aikeys.kube.config import KubeConfig
from aikeys.kube.watch import Backoff, ListWatch, page_params, status_error

JSON = dict[str, Any]


def obj(name: str, rv: str, ns: str = "team", **spec: Any) -> JSON:
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": rv}, "spec": spec}


def gone() -> JSON:
    return {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
    }


class Scripted(KubeClient):
    """Answers lists from `lists` (each a list of pages) and watches from `watches` (each a list of
    events, or an exception to raise), in order; once the script is done a watch waits for ever."""

    def __init__(self, lists: list[list[JSON]], watches: list[list[JSON] | Exception]):
        super().__init__(KubeConfig(server="http://127.0.0.1:1"))
        self.lists = lists
        self.watches = watches
        self.gets: list[dict[str, str]] = []
        self.watched_from: list[str] = []
        self.idle = asyncio.Event()
        self._pages: list[JSON] = []

    async def get(self, url_path: str, params: Mapping[str, str] | None = None) -> JSON:
        self.gets.append(dict(params or {}))
        if not (params or {}).get("continue"):
            self._pages = list(self.lists.pop(0))
        return self._pages.pop(0)

    async def watch(self, url_path: str, resource_version: str, **_: Any) -> AsyncIterator[JSON]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.idle.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


def page(items: list[JSON], rv: str, cont: str = "") -> JSON:
    return {"items": items, "metadata": {"resourceVersion": rv, **({"continue": cont} if cont else {})}}


async def run_until_idle(watcher: ListWatch, kube: Scripted) -> None:
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(kube.idle.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_page_params_carry_the_callers_selector_and_the_continue_token() -> None:
    assert page_params({"fieldSelector": "metadata.name=x"}, 500, "") == {
        "fieldSelector": "metadata.name=x",
        "limit": "500",
    }
    assert page_params({}, 2, "abc") == {"limit": "2", "continue": "abc"}


def test_an_error_event_becomes_the_error_a_request_would_raise() -> None:
    err = status_error({"code": 500, "reason": "InternalError", "message": "etcd away"})
    assert isinstance(err, ApiError) and (err.status, err.reason, err.message) == (
        500,
        "InternalError",
        "etcd away",
    )
    assert status_error({}).status == 500  # a Status without a code is still an error


def test_backoff_doubles_to_its_ceiling_with_jitter_and_starts_over_after_a_success() -> None:
    backoff = Backoff(first=0.1, most=1.0, rng=random.Random(7))
    waits = [backoff.next() for _ in range(6)]
    assert [nominal for nominal, _ in waits] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert all(0.5 * nominal <= slept <= 1.5 * nominal for nominal, slept in waits)
    assert len({slept / nominal for nominal, slept in waits}) > 1  # not all cut off alike
    backoff.reset()
    assert backoff.next()[0] == 0.1


async def test_an_informer_lists_in_pages_then_follows_the_watch() -> None:
    kube = Scripted(
        lists=[[page([obj("a", "1")], "", cont="p2"), page([obj("b", "2")], "10")]],
        watches=[
            [
                {"type": "ADDED", "object": obj("c", "11")},
                {"type": "MODIFIED", "object": obj("a", "12", note="changed")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
                {"type": "DELETED", "object": obj("b", "16")},
            ]
        ],
    )
    changes: list[tuple[Any, ...]] = []
    informer: Informer[JSON] = Informer(
        kube,
        "Thing",
        "/things",
        lambda o: o["spec"],
        lambda k, old, new: changes.append((k, old, new)),
        page=1,
    )
    await run_until_idle(informer, kube)
    assert kube.gets == [{"limit": "1"}, {"limit": "1", "continue": "p2"}]
    assert kube.watched_from == ["10", "16"]  # from the list, then from the last event seen
    assert informer.objects == {("team", "a"): {"note": "changed"}, ("team", "c"): {}}
    assert informer.synced.is_set() and informer.relists == 1 and informer.errors == 0
    assert changes[-1] == (("team", "b"), {}, None)


async def test_410_gone_relists_and_objects_deleted_in_the_gap_disappear() -> None:
    kube = Scripted(
        lists=[[page([obj("a", "1"), obj("b", "2")], "10")], [page([obj("a", "1")], "30")]],
        watches=[[gone()]],
    )
    relisted: list[dict[Any, Any]] = []
    informer: Informer[JSON] = Informer(
        kube, "Thing", "/things", lambda o: o["spec"], on_relist=relisted.append
    )
    await run_until_idle(informer, kube)
    assert set(informer.objects) == {("team", "a")}
    assert informer.relists == 2 and len(relisted) == 2
    assert kube.watched_from == ["10", "30"]


async def test_an_operator_watch_hands_every_object_on_and_tells_what_a_list_saw() -> None:
    kube = Scripted(
        lists=[[page([obj("a", "1"), obj("b", "2")], "10")], [page([obj("b", "2")], "20")]],
        watches=[[{"type": "MODIFIED", "object": obj("a", "11")}, gone()]],
    )
    events: list[tuple[str, str]] = []
    listed: list[set[tuple[str, str]]] = []

    async def on_listed(seen: set[tuple[str, str]]) -> None:
        listed.append(seen)

    watch = Watch(
        kube, "Thing", "/things", lambda kind, o: events.append((kind, o["metadata"]["name"])), on_listed
    )
    await run_until_idle(watch, kube)
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("ADDED", "b")]
    assert listed == [{("team", "a"), ("team", "b")}, {("team", "b")}]  # the caller drops "a"
    assert watch.lists == 2


async def test_a_handler_that_fails_on_one_object_does_not_stop_the_others() -> None:
    kube = Scripted(lists=[[page([obj("bad", "1"), obj("good", "2")], "10")]], watches=[])
    seen: list[str] = []

    def on_event(kind: str, o: JSON) -> None:
        if o["metadata"]["name"] == "bad":
            raise ValueError("cannot read it")
        seen.append(o["metadata"]["name"])

    watch = Watch(kube, "Thing", "/things", on_event)
    await run_until_idle(watch, kube)
    assert seen == ["good"] and watch.synced.is_set()


async def test_a_broken_watch_resumes_where_it_was_without_listing_again() -> None:
    kube = Scripted(
        lists=[[page([obj("a", "1")], "10")]],
        watches=[
            [{"type": "ADDED", "object": obj("b", "11")}],
            ConnectionResetError("reset by peer"),
            ApiError(500, "InternalError", "etcd away"),
            [{"type": "ADDED", "object": obj("c", "12")}],
        ],
    )
    informer: Informer[JSON] = Informer(kube, "Thing", "/things", lambda o: o["spec"])
    await run_until_idle(informer, kube)
    assert kube.watched_from == ["10", "11", "11", "11", "12"]
    assert informer.errors == 2 and informer.relists == 1
    assert set(informer.objects) == {("team", "a"), ("team", "b"), ("team", "c")}


async def test_an_error_event_other_than_gone_is_retried_from_the_same_place() -> None:
    kube = Scripted(
        lists=[[page([], "10")]],
        watches=[
            [{"type": "ERROR", "object": {"code": 504, "reason": "Timeout", "message": "Too large"}}],
            [],
        ],
    )
    watch = Watch(kube, "Thing", "/things", lambda kind, o: None)
    await run_until_idle(watch, kube)
    assert kube.watched_from == ["10", "10", "10"] and watch.errors == 1 and watch.lists == 1


async def test_an_informer_already_synced_resumes_its_watch_instead_of_listing() -> None:
    kube = Scripted(lists=[], watches=[])
    informer: Informer[JSON] = Informer(kube, "Thing", "/things", lambda o: o["spec"])
    informer.resource_version = "42"
    informer.synced.set()
    await run_until_idle(informer, kube)
    assert kube.gets == [] and kube.watched_from == ["42"]

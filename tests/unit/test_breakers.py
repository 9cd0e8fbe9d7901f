"""Which upstream goes first and which next: weights and circuit breakers, on a fake clock."""

from __future__ import annotations

import random
from collections import Counter

from aikeys_gateway.cache.catalog import ModelEntry, ProviderEntry
from aikeys_gateway.pipeline.breakers import Breakers
from aikeys_gateway.pipeline.routing import Route

from aikeys.money import Price
from aikeys.resources import ProviderType


def route(name: str, weight: int, backends: tuple[Route, ...] = ()) -> Route:
    provider = ProviderEntry(
        "ns", name, ProviderType.OPENAI, "http://x", None, False, frozenset(), True, 10.0, "x", "max_tokens"
    )
    model = ModelEntry("m", "m", Price(1, 1), None, None, False)
    return Route(f"ns:{name}/m", provider, model, None, weight, backends)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_attempts_follow_the_weights_and_the_rest_follow_as_fallbacks() -> None:
    b, c = route("b", 1), route("c", 0)
    a = route("a", 3, (b, c))
    breakers = Breakers(rng=random.Random(7))
    firsts = Counter(breakers.order(a)[0].model_id for _ in range(4000))
    assert firsts["ns:c/m"] == 0  # weight 0: only ever a fallback
    assert 0.7 < firsts["ns:a/m"] / 4000 < 0.8  # 3:1
    assert all(len(breakers.order(a)) == 3 for _ in range(10))
    assert breakers.order(a)[-1].model_id == "ns:c/m"


def test_a_circuit_opens_after_failures_and_lets_one_trial_through() -> None:
    clock = Clock()
    b = route("b", 0)
    a = route("a", 1, (b,))
    breakers = Breakers(failures=2, open_seconds=30, clock=clock)
    breakers.failed(a)
    assert [r.model_id for r in breakers.order(a)] == ["ns:a/m", "ns:b/m"]  # one failure: still in
    breakers.failed(a)
    assert [r.model_id for r in breakers.order(a)] == ["ns:b/m"]  # open
    clock.now += 31
    assert [r.model_id for r in breakers.order(a)] == ["ns:a/m", "ns:b/m"]  # half open: one trial
    assert [r.model_id for r in breakers.order(a)] == ["ns:b/m"]  # only one
    breakers.failed(a)  # the trial failed: open again
    clock.now += 10
    assert [r.model_id for r in breakers.order(a)] == ["ns:b/m"]
    clock.now += 31
    assert breakers.order(a)[0].model_id == "ns:a/m"
    breakers.succeeded(a)  # the trial succeeded: closed
    assert not breakers.is_open("ns:a/m")
    assert [r.model_id for r in breakers.order(a)] == ["ns:a/m", "ns:b/m"]


def test_when_every_candidate_is_out_they_are_tried_anyway() -> None:
    b = route("b", 0)
    a = route("a", 1, (b,))
    breakers = Breakers(failures=1, open_seconds=30, clock=Clock())
    breakers.failed(a)
    breakers.failed(b)
    assert [r.model_id for r in breakers.order(a)] == ["ns:a/m", "ns:b/m"]

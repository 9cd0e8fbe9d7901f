"""The gateway's cache of TokenReview and SubjectAccessReview answers is bounded in size and time."""

from __future__ import annotations

import pytest
from aikeys_gateway.kubeauth import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("aikeys_gateway.kubeauth.time.monotonic", c)
    return c


def test_answers_expire_after_their_own_ttl(clock: Clock) -> None:
    cache: TTLCache[str, bool] = TTLCache(10)
    cache.put("good", True, 30)
    cache.put("refused", False, 2)
    clock.now += 2.5
    assert cache.get("good") == (True, True)
    assert cache.get("refused") == (False, None)
    clock.now += 30
    assert cache.get("good") == (False, None)
    assert len(cache) == 0


def test_a_flood_of_tokens_never_grows_it_past_its_size(clock: Clock) -> None:
    cache: TTLCache[str, bool] = TTLCache(100)
    for i in range(10_000):
        cache.put(f"token-{i}", True, 30)
    assert len(cache) == 100
    assert cache.get("token-9999") == (True, True)  # the newest stay, the oldest went first
    assert cache.get("token-0") == (False, None)


def test_nothing_is_kept_for_a_ttl_of_zero(clock: Clock) -> None:
    cache: TTLCache[str, bool] = TTLCache(10)
    cache.put("x", True, 0)
    assert cache.get("x") == (False, None)

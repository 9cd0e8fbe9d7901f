"""The key format: entropy, checksum, hash and hint."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from aikeys import keys


def test_minted_key_shape() -> None:
    key = keys.mint()
    assert key.startswith("aik_")
    assert len(key) == keys.KEY_LEN == 53
    assert keys.well_formed(key)
    assert keys.key_hash(key) == hashlib.sha256(key.encode()).hexdigest()
    assert keys.hint(key) == "aik_…" + key[-4:]
    assert key[-4:] in keys.hint(key)


def test_keys_are_unique() -> None:
    assert len({keys.mint() for _ in range(2000)}) == 2000


def test_entropy_is_at_least_256_bits() -> None:
    assert 62**keys.BODY_LEN >= 2**256


@given(st.integers(min_value=len("aik_"), max_value=keys.KEY_LEN - 1), st.sampled_from("0aZ9"))
def test_any_single_change_breaks_the_checksum_or_format(pos: int, replacement: str) -> None:
    key = keys.mint()
    if key[pos] == replacement:
        return
    changed = key[:pos] + replacement + key[pos + 1 :]
    assert not keys.well_formed(changed)


@given(st.text(max_size=80))
def test_random_text_is_not_a_key(text: str) -> None:
    assert not keys.well_formed(text) or text.startswith("aik_")


def test_malformed() -> None:
    key = keys.mint()
    assert not keys.well_formed(key[:-1])
    assert not keys.well_formed("sk_" + key[3:])
    assert not keys.well_formed(key + "x")
    assert not keys.well_formed(key[:10] + "!" + key[11:])

"""The mock upstream's deterministic token counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aikeys.mockupstream import tokens


def test_count_text_examples() -> None:
    assert tokens.count_text("") == 0
    assert tokens.count_text("Hello, world!") == 4
    assert tokens.count_text("  spaced   out  ") == 2


def test_chat_framing() -> None:
    assert tokens.count_messages([{"role": "user", "content": "hi"}]) == 3 + 3 + 1
    named = [{"role": "user", "name": "bob", "content": "hi"}]
    assert tokens.count_messages(named) == 3 + 3 + 1 + 1 + 1
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]}]
    assert tokens.count_messages(parts) == 3 + 3 + 2


def test_prompt_shapes() -> None:
    assert tokens.count_prompt("a b c") == 3
    assert tokens.count_prompt(["a", "b c"]) == 3
    assert tokens.count_prompt([1, 2, 3, 4]) == 4
    assert tokens.count_prompt([[1, 2], [3]]) == 3


@given(st.integers(min_value=0, max_value=500))
def test_reply_of_n_pieces_counts_n_tokens(n: int) -> None:
    pieces = tokens.reply_words(n)
    assert len(pieces) == n
    assert tokens.count_text("".join(pieces)) == n


@given(st.text(), st.text())
def test_counts_add_up_over_whitespace(a: str, b: str) -> None:
    assert tokens.count_text(a + " " + b) == tokens.count_text(a) + tokens.count_text(b)

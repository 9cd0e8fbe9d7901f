"""Charged what the provider bills, per token kind (issue 22): the usage shapes of OpenAI chat,
OpenAI Responses and Anthropic read into disjoint kinds, each priced at its own rate, one rounding."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aikeys.money import NANO_PER_USD, Price
from aikeys.usage import Usage, reported_usage

TOKENS = st.integers(0, 10**9)
USD = st.one_of(st.none(), st.integers(0, 10**6 * NANO_PER_USD))  # nano-USD per million
PRICES = st.builds(
    Price, st.integers(0, 10**6 * NANO_PER_USD), st.integers(0, 10**6 * NANO_PER_USD), USD, USD, USD
)


def test_the_issue_s_agent_turn_is_charged_what_the_provider_bills() -> None:
    """50,000 prompt tokens of which 45,000 cached, 500 output; 1.25 / 0.125 / 10 USD per million:
    0.016875 USD (it was charged 0.0675, 4x)."""
    price = Price.parse("1.25", "10.00", cached_input="0.125")
    usage = reported_usage(
        {
            "prompt_tokens": 50_000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 45_000},
        }
    )
    assert usage == Usage(5_000, 500, 45_000)
    assert price.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens) == 16_875_000


def test_usage_shapes_read_into_disjoint_kinds() -> None:
    responses = {"input_tokens": 100, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 60}}
    assert reported_usage(responses) == Usage(40, 7, 60)
    anthropic = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    }
    assert reported_usage(anthropic) == Usage(10, 5, 1000, 100, 200)
    # cached beyond the prompt, or of a wrong type: never more than what was counted
    assert reported_usage(
        {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}
    ) == Usage(0, 1, 5)
    bad: Any = {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": "3"}}
    assert reported_usage(bad) == Usage(5, 1)


def test_absent_kind_prices_are_the_input_price() -> None:
    plain, kinds = Price.parse("2.00", "8.00"), Price.parse("2.00", "8.00", "0.50", "2.50", "4.00")
    assert plain.cost(10, 1, 20, 30, 40) == plain.cost(100, 1)
    assert kinds.cost(10, 1, 20, 30, 40) == (10 * 2000 + 8000 + 20 * 500 + 30 * 2500 + 40 * 4000)
    assert kinds.dearest_input_per_million == 4 * NANO_PER_USD
    assert kinds.bound(100, 1) == 100 * 4000 + 8000


@settings(max_examples=500)
@given(PRICES, TOKENS, TOKENS, TOKENS, TOKENS, TOKENS)
def test_a_charge_is_the_price_list_sum_and_never_above_the_bound(
    price: Price, uncached: int, out: int, cached: int, write: int, write_1h: int
) -> None:
    charged = price.cost(uncached, out, cached, write, write_1h)

    def kind(p: int | None) -> int:
        return price.input_per_million if p is None else p

    exact = (
        uncached * price.input_per_million
        + out * price.output_per_million
        + cached * kind(price.cached_input_per_million)
        + write * kind(price.cache_write_per_million)
        + write_1h * kind(price.cache_write_1h_per_million)
    )
    assert charged * 10**6 - exact in range(10**6)  # one rounding, up, below a nano-USD
    assert charged <= price.bound(uncached + cached + write + write_1h, out)


@settings(max_examples=500)
@given(PRICES, TOKENS, TOKENS, TOKENS)
def test_a_cached_token_is_counted_once(price: Price, prompt: int, cached: int, out: int) -> None:
    """Chat counts cache reads inside prompt_tokens: the kinds add up to the prompt, no more."""
    usage = reported_usage(
        {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    )
    assert usage is not None
    assert usage.all_input == prompt and usage.cached_tokens == min(cached, prompt)
    assert price.cost(usage.input_tokens, out, usage.cached_tokens) <= price.bound(prompt, out)

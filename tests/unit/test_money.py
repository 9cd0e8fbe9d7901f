"""Money: exact USD parsing and cost rounding, no floats."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aikeys.money import NANO_PER_USD, MoneyError, Price, format_usd, parse_usd

usd_strings = st.builds(
    lambda whole, frac: f"{whole}" + (f".{frac}" if frac else ""),
    st.integers(min_value=0, max_value=10**12 - 1),
    st.text(alphabet="0123456789", min_size=0, max_size=9),
)


def test_examples() -> None:
    assert parse_usd("25.00") == 25 * NANO_PER_USD
    assert parse_usd("0.000000001") == 1
    assert parse_usd("2.5") == 2_500_000_000
    assert format_usd(25 * NANO_PER_USD) == "25.00"
    assert format_usd(1) == "0.000000001"
    assert format_usd(-1_500_000_000) == "-1.50"


@pytest.mark.parametrize("bad", ["", "-1", "+1", "1e3", "1.0000000001", "1,5", " 1", "1.", ".5", "NaN", "٣"])
def test_rejects(bad: str) -> None:
    with pytest.raises(MoneyError):
        parse_usd(bad)


@given(usd_strings)
def test_parse_is_exact(text: str) -> None:
    assert parse_usd(text) == int(Decimal(text) * NANO_PER_USD)


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_format_round_trips(nano: int) -> None:
    text = format_usd(nano)
    assert int(Decimal(text) * NANO_PER_USD) == nano
    if nano >= 0:
        assert parse_usd(text) == nano


@given(usd_strings, usd_strings, st.integers(0, 10**9), st.integers(0, 10**9))
def test_cost_is_the_exact_amount_rounded_up(pin: str, pout: str, tin: int, tout: int) -> None:
    price = Price.parse(pin, pout)
    exact = (Fraction(pin) * tin + Fraction(pout) * tout) / 1_000_000 * NANO_PER_USD
    cost = price.cost(tin, tout)
    assert cost >= exact > cost - 1  # ceil
    assert isinstance(cost, int)


@given(usd_strings, usd_strings, st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7))
def test_cost_is_monotonic(pin: str, pout: str, tin: int, tout: int, more: int) -> None:
    price = Price.parse(pin, pout)
    assert price.cost(tin + more, tout) >= price.cost(tin, tout)
    assert price.cost(tin, tout + more) >= price.cost(tin, tout)


def test_gpt_like_prices() -> None:
    price = Price.parse("2.50", "10.00")
    assert price.cost(1000, 500) == 2_500_000 + 5_000_000  # $0.0025 + $0.005
    tiny = Price.parse("0.075", "0.30")
    assert tiny.cost(1, 0) == 75  # $0.075 per million tokens = 75 nano-USD per token
    assert tiny.cost(1, 1) == 375
    assert Price.parse("0.000001", "0").cost(1, 0) == 1  # a fraction of a nano rounds up to 1

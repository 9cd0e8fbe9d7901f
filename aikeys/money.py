"""Money as integers: nano-USD (10⁻⁹ USD) everywhere in the ledger and pricing.

Amounts enter as USD decimal strings (`"25.00"` in an Allocation, `"2.50"` per million tokens
in an AIProvider) and are converted exactly, never through a float. A request's cost is
`input_tokens × input_price + output_tokens × output_price`, rounded *up* to the nano-USD, so
rounding never lets spend slip under what the provider charges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NANO_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens
USD_DECIMALS = 9

USD_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"
_USD = re.compile(USD_PATTERN)


class MoneyError(ValueError):
    """A USD string that is not a plain non-negative decimal with at most 9 decimals."""


def parse_usd(text: str) -> int:
    """`"25.00"` → 25_000_000_000 nano-USD. Exact; rejects signs, exponents and >9 decimals."""
    if not isinstance(text, str) or not _USD.match(text):
        raise MoneyError(
            f"{text!r} is not a USD amount like '25.00' (digits, optional '.', up to 9 decimals)"
        )
    whole, _, frac = text.partition(".")
    return int(whole) * NANO_PER_USD + int(frac.ljust(USD_DECIMALS, "0") or "0")


def format_usd(nano: int, min_decimals: int = 2) -> str:
    """25_000_000_000 → `"25.00"`; keeps every significant nano digit, at least `min_decimals`."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO_PER_USD)
    digits = f"{frac:09d}".rstrip("0").ljust(min_decimals, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


@dataclass(frozen=True)
class Price:
    """A model's prices, in nano-USD per million tokens (exact integers), per token kind: input
    (uncached), output, and — when the provider prices them apart — cache reads and 5-minute and
    1-hour cache writes (None: the input price)."""

    input_per_million: int
    output_per_million: int
    cached_input_per_million: int | None = None
    cache_write_per_million: int | None = None
    cache_write_1h_per_million: int | None = None

    @classmethod
    def parse(
        cls,
        input_per_million: str,
        output_per_million: str,
        cached_input: str | None = None,
        cache_write: str | None = None,
        cache_write_1h: str | None = None,
    ) -> Price:
        def optional(value: str | None) -> int | None:
            return None if value is None else parse_usd(value)

        return cls(
            parse_usd(input_per_million),
            parse_usd(output_per_million),
            optional(cached_input),
            optional(cache_write),
            optional(cache_write_1h),
        )

    def _kind(self, price: int | None) -> int:
        return self.input_per_million if price is None else price

    @property
    def dearest_input_per_million(self) -> int:
        """The highest price an input token can be billed at, whatever its kind."""
        return max(
            self.input_per_million,
            self._kind(self.cached_input_per_million),
            self._kind(self.cache_write_per_million),
            self._kind(self.cache_write_1h_per_million),
        )

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> int:
        """Cost in nano-USD: each kind's tokens × its price, summed, divided by a million and
        rounded up once. `input_tokens` are the uncached ones (the kinds are disjoint)."""
        counts = (input_tokens, output_tokens, cached_tokens, cache_write_tokens, cache_write_1h_tokens)
        if min(counts) < 0:
            raise ValueError("token counts cannot be negative")
        scaled = (
            input_tokens * self.input_per_million
            + output_tokens * self.output_per_million
            + cached_tokens * self._kind(self.cached_input_per_million)
            + cache_write_tokens * self._kind(self.cache_write_per_million)
            + cache_write_1h_tokens * self._kind(self.cache_write_1h_per_million)
        )
        return ceil_div(scaled, TOKENS_PER_PRICE_UNIT)

    def bound(self, input_tokens: int, output_tokens: int) -> int:
        """The most `input_tokens` of any kind and `output_tokens` can cost (a reservation)."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts cannot be negative")
        scaled = input_tokens * self.dearest_input_per_million + output_tokens * self.output_per_million
        return ceil_div(scaled, TOKENS_PER_PRICE_UNIT)

"""The documented maxima of aikeys: what the ledger can represent exactly, checked at the edges.

Ledger counters are integer nano-USD held in Lua doubles, exact below 2^53 (≈ 9,007,199 USD).
Every number that can reach them is capped where it enters: in the CRDs (CEL) for budgets,
prices and token limits, and in the gateway for request fields. A request whose upper bound
does not fit is refused (402: it cannot be covered), never a 500.
"""

from __future__ import annotations

MAX_BUDGET_USD = 9_000_000  # an Allocation's budget per period
MAX_PRICE_PER_MILLION_USD = 1_000_000  # a model's price per million tokens, each direction
MAX_OUTPUT_TOKENS = 10_000_000  # an AIProvider model's maxOutputTokens
MAX_CONTEXT_TOKENS = 100_000_000  # an AIProvider model's contextWindow
MAX_TOKEN_LIMIT = 2**53 - 1  # an Allocation's tokenLimit
MAX_CHOICES = 128  # n (chat, completions) and best_of, as OpenAI allows
MAX_JSON_DEPTH = 254  # nesting of a request body the gateway re-serializes (orjson's); deeper: 400
MAX_ECHOED_CHARS = 256  # longest client-supplied string echoed in an error message


def truncate(text: str, limit: int = MAX_ECHOED_CHARS) -> str:
    """A client-supplied value as it may appear in an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""The exchange record: one request as the access log, the metrics and the trace tell it.

Every step of the pipeline writes what it learned into typed fields (who, which model, what was
tried, what was charged); `record()` renders them once, at the end, as the access log's JSON
object and the span's attributes. Only what happened is in the record: a request that failed
before its model was resolved has no `model`, one never charged has no tokens or cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aikeys.ledger.store import NO_RATE, RateState
from aikeys.money import format_usd
from aikeys_gateway.pipeline.reservation import Reservation, Tally

if TYPE_CHECKING:  # the span's type only: tracing is imported when it is on
    from aikeys_gateway.observe.tracing import RequestSpan


@dataclass(eq=False)
class Exchange:
    """One request as the gateway handles it."""

    rid: str
    endpoint: str  # the route: "chat/completions", … ("models", "unmatched" for the others)
    started: float  # perf_counter at arrival
    method: str = ""  # set for the routes that are not metered
    namespace: str = ""
    key: str = ""
    model: str = ""
    stream: bool | None = None  # None: not known (failed before the body was read)
    translated: bool = False  # a Responses request sent to a chat-only backend
    backend: str = ""  # another upstream of the model answered
    fallbacks: list[str] = field(default_factory=list)  # "<model>:<why>" of each attempt left
    status: int = 0
    error: str = ""  # our error code, when the gateway answered with an error
    client_left: bool = False  # a stream's client left before its end
    upstream_broke: bool = False  # a stream's upstream broke off
    tally: Tally = field(default_factory=Tally)  # what it was charged (its reservations add to it)
    reservation: Reservation | None = None  # what it holds now (set once reserved; its state tells the rest)
    pending: int = 1  # parts still to end before it is logged: the answer, and a settle that outlives it
    span: RequestSpan | None = None  # its trace span, when tracing is on
    rate: RateState = NO_RATE  # the tightest rate limits met, for the x-ratelimit-* headers

    def record(self) -> dict[str, Any]:
        """The access log's fields (and the span's, see observe/tracing.py)."""
        r: dict[str, Any] = {"rid": self.rid}
        if self.method:
            r["method"] = self.method
        r["endpoint"] = self.endpoint
        for name in ("namespace", "key", "model"):
            if value := getattr(self, name):
                r[name] = value
        if self.stream is not None:
            r["stream"] = self.stream
        for flag in ("translated", "client_left", "upstream_broke"):
            if getattr(self, flag):
                r[flag] = True
        if self.backend:
            r["backend"] = self.backend
        if self.fallbacks:
            r["fallbacks"] = list(self.fallbacks)
        if self.error:
            r["error"] = self.error
        r["status"] = self.status
        t = self.tally
        if t.charged:
            r["input_tokens"] = t.input_tokens
            if t.cached_tokens or t.cache_write_tokens:
                r["cached_tokens"] = t.cached_tokens
                r["cache_write_tokens"] = t.cache_write_tokens
            r["output_tokens"] = t.output_tokens
            r["cost_usd"] = format_usd(t.cost)
        if t.overrun:
            r["overrun"] = True
        return r

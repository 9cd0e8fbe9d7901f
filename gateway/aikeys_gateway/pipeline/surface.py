"""The seam for API dialects: what one API surface (OpenAI's today) does differently.

The pipeline (pipeline.py) runs the steps every surface shares — authenticate, resolve the model,
cap, bound, reserve, send, settle, log/trace/count — and asks the request's `Surface` for the rest:
how a request is checked and which routes may serve it, the form it goes upstream in for each route
(`plan`, possibly translated), how an answer and its events reach the client, and its error shape.
One module per surface implements it (`surfaces/openai/surface.py`); one per upstream kind says how
that upstream is called and read (`upstreams/kinds.py`).
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.responses import Response

from aikeys.estimate import Endpoint
from aikeys_gateway.cache.catalog import KeyEntry
from aikeys_gateway.errors import GatewayError
from aikeys_gateway.pipeline.plan import Plan
from aikeys_gateway.pipeline.routing import Route
from aikeys_gateway.upstreams.sse import Reader


class Surface(Protocol):
    name: str

    def validate(self, endpoint: Endpoint, body: dict[str, Any]) -> None:
        """Bad input is a 400 (GatewayError) before anything is reserved or sent."""
        ...

    async def routes(
        self, endpoint: Endpoint, body: dict[str, Any], key: KeyEntry, route: Route, routes: list[Route]
    ) -> list[Route]:
        """Of `routes` (the requested `route` and its backends, in the order to try), those that
        may serve this request: fewer when it continues state that only one upstream holds."""
        ...

    def plan(self, endpoint: Endpoint, body: dict[str, Any], route: Route, stream: bool) -> Plan:
        """The request as `route` gets it (plan.build, after translating when the route does not
        speak this endpoint)."""
        ...

    def answer(
        self, plan: Plan, request: dict[str, Any], parsed: Any, raw: bytes, media_type: str
    ) -> tuple[bytes, str]:
        """A whole answer as the client gets it (bytes, media type)."""
        ...

    def reader(self, plan: Plan, request: dict[str, Any]) -> Reader:
        """How a stream from `plan`'s upstream is read (and rewritten for the client)."""
        ...

    async def answered(
        self, plan: Plan, request: dict[str, Any], key: KeyEntry, model_id: str, answer_id: str | None
    ) -> None:
        """After an answer: what the surface keeps of it (e.g. who owns a stored response)."""
        ...

    def upstream_error(self, status: int, parsed: Any, raw: bytes, rid: str) -> Response | None:
        """An upstream's own error answer, passed on when it is in this surface's shape."""
        ...

    def error(self, err: GatewayError, rid: str) -> Response: ...

    def error_event(self, err: GatewayError) -> bytes:
        """The error told inside a stream that has begun."""
        ...

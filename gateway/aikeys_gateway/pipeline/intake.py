"""A request's way in: its id, its body (bounded in size and time), and the checks that make bad
input a 400 before anything is reserved or sent."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from aikeys import limits
from aikeys.estimate import Endpoint
from aikeys_gateway import errors
from aikeys_gateway.surfaces.openai import schemas

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REQUIRED = {
    Endpoint.CHAT: "messages",
    Endpoint.COMPLETIONS: "prompt",
    Endpoint.EMBEDDINGS: "input",
    Endpoint.RESPONSES: "input",
}
DISCARD_FACTOR = 4  # an oversized body is read and dropped up to this many times the limit


def headers_of(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict, in one pass (names are lower-case in ASGI; of a
    repeated header the first): the metered routes look up a handful, each without an exception
    (Starlette's `Headers.get` raises and catches KeyError for every header that is absent)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])}


def request_id(request: Request, headers: dict[str, str] | None = None) -> str:
    """The client's x-request-id when it is a sane one, else a new id."""
    given = (headers if headers is not None else request.headers).get("x-request-id")
    return given if given and _REQUEST_ID.match(given) else new_id()


_PROCESS = os.urandom(8).hex()  # this process's random half of every id it makes
_SEQUENCE = itertools.count()


def _reseed() -> None:  # a forked child must not repeat its parent's ids
    global _PROCESS, _SEQUENCE
    _PROCESS, _SEQUENCE = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A 128-bit id in hex, unique across processes and restarts: this process's random 64 bits
    and a counter (no syscall per id, unlike uuid4)."""
    return f"{_PROCESS}{next(_SEQUENCE):016x}"


async def _discard(chunks: AsyncIterator[bytes], budget: int) -> None:
    """Read and drop the rest of an oversized body, so the client gets to read our 413 instead of
    a connection reset while it is still sending (bounded: past `budget` bytes we stop)."""
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > budget:
                return
    except ClientDisconnect:
        return


async def read_body(request: Request, limit: int, seconds: float, declared: str | None = None) -> bytes:
    """The whole body, or 413 past `limit` bytes, or 408 when it is not complete in `seconds`.
    `declared`: the request's Content-Length header."""
    try:
        async with asyncio.timeout(seconds):
            incoming = request.stream()
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _discard(incoming, DISCARD_FACTOR * limit)
                raise errors.too_large(limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in incoming:
                size += len(chunk)
                if size > limit:
                    await _discard(incoming, DISCARD_FACTOR * limit - size)
                    raise errors.too_large(limit)
                chunks.append(chunk)
            return b"".join(chunks)
    except TimeoutError as err:
        raise errors.request_timeout(seconds) from err


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise errors.invalid_request(f"We could not parse the JSON body of your request: {err}.") from err
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    return body


def validate(endpoint: Endpoint, body: dict[str, Any]) -> None:
    """A 400 for a body the gateway must not send: its required field missing, a known field of
    the wrong type (`schemas`), or what no budget can hold."""
    field = _REQUIRED[endpoint]
    value = body.get(field)
    if value is None or value in ("", []):
        raise errors.invalid_request(
            f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter"
        )
    schemas.check(endpoint, body)
    if endpoint is Endpoint.RESPONSES and body.get("background"):
        raise errors.invalid_request(
            "Background responses are not available through this gateway: their cost is only known "
            "after the request returns, so they cannot be held to a budget.",
            param="background",
            code="unsupported_parameter",
        )


def serialize(body: dict[str, Any]) -> bytes:
    """The upstream request's bytes; a body nested too deeply to re-serialize is a 400."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as err:
        raise errors.invalid_request(
            f"The request body is nested too deeply (at most {limits.MAX_JSON_DEPTH} levels).",
            code="nesting_too_deep",
        ) from err

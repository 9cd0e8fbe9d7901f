"""What every route of the mock upstream does with a request, and the state they share.

A request is logged (method, path, headers, body, peer; the answer's status is added by
`log_status`), checked against the behaviour's switches (API key, injected failures, latency), its
JSON body and model read; the answer is billed as a provider would bill it (`bill`: the honest
counts whatever usage reports), its usage reported as the behaviour says, and sent as JSON or as an
SSE stream that can be slowed, stalled or broken; `faults` sends a billed JSON answer late or never.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import web

from aikeys_dev.mockupstream import replies, wire
from aikeys_dev.mockupstream.behaviour import Behaviour
from aikeys_dev.mockupstream.cache import PromptCache
from aikeys_dev.mockupstream.replies import Reply

_JSON = "application/json"
_FAILURES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}


Event = dict[str, Any] | str | tuple[str, dict[str, Any]]  # a stream event; a tuple has an event type
LOG_ENTRY = web.RequestKey("log_entry", dict)


@web.middleware
async def log_status(request: web.Request, handler: Any) -> web.StreamResponse:
    """Record each logged request's answer status (what was billed is what answered 2xx)."""
    response: web.StreamResponse = await handler(request)
    entry = request.get(LOG_ENTRY)
    if entry is not None:
        entry["status"] = response.status
    return response


class Core:
    """State of one mock server (its behaviour, the last requests it received, the prompts it has
    cached) and the steps its routes share."""

    def __init__(self, behaviour: Behaviour | None = None, log_size: int = 10_000):
        self.behaviour = behaviour or Behaviour()
        self.requests: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.started = int(time.time())
        self.cache = PromptCache()

    async def faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A generated JSON answer sent late (`late_ms`) or never (`reset`): the upstream did the
        work, and a real provider bills it."""
        response: web.StreamResponse = await handler(request)
        b = self.behaviour
        entry = request.get(LOG_ENTRY)
        faulty = (b.late_ms or b.reset) and b.fault_count != 0
        if not faulty or entry is None or "billed" not in entry or response.prepared:
            return response
        if b.fault_count is not None:
            b.fault_count -= 1
        entry["fault"] = "reset" if b.reset else "late"
        if b.late_ms:
            await asyncio.sleep(b.late_ms / 1000)
        if b.reset and request.transport is not None:
            request.transport.abort()
        return response

    def bill(self, request: web.Request, input_tokens: int, output_tokens: int, cached: int = 0) -> None:
        """What this generation costs at a provider: the honest counts, whatever usage reports
        (`cached` of the input tokens at the cached-input price)."""
        entry = request.get(LOG_ENTRY)
        if entry is not None:
            entry["billed"] = {"input": input_tokens, "output": output_tokens, "cached": cached}

    def cached(self, model: str, parts: list[tuple[Any, int]]) -> int:
        """The cached prompt tokens of an input of `parts` (messages or items and their tokens)."""
        b = self.behaviour
        if not b.prompt_cache:
            return 0
        return self.cache.cached(model, parts, b.cache_increment, b.cache_min_tokens)

    def error(
        self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None
    ) -> web.Response:
        body = wire.dumps(wire.error(message, type_, param, code), spaced=self.behaviour.json_spacing)
        return web.Response(status=status, body=body, content_type=_JSON)

    def check_auth(self, request: web.Request) -> web.Response | None:
        expected = self.behaviour.api_key
        if expected is None:
            return None
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else request.headers.get("api-key", "")
        if given == expected:
            return None
        shown = (given[:3] + "*" * 4 + given[-4:]) if len(given) > 8 else "<none>"
        return self.error(
            401, f"Incorrect API key provided: {shown}.", "invalid_request_error", code="invalid_api_key"
        )

    async def admit(self, request: web.Request, body: Any) -> web.Response | None:
        """Log the request and apply the auth, failure and latency switches to it."""
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": body,
            "time": time.time(),
            "peer": "{}:{}".format(*(request.transport.get_extra_info("peername") or ("", 0))[:2])
            if request.transport is not None
            else "",  # which connection: clients that keep theirs alive show one peer
        }
        request[LOG_ENTRY] = entry  # the status is added when the answer starts (_log_status)
        self.requests.append(entry)
        b = self.behaviour
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        status = b.fail_status
        if status is not None:
            if b.fail_count is not None:
                b.fail_count -= 1
                if b.fail_count <= 0:
                    b.fail_status = b.fail_count = None
            type_, code = _FAILURES.get(status, ("server_error", None))
            message = f"Injected failure: HTTP {status} from the mock upstream."
            return self.error(status, message, type_, code=code)
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        return None

    async def begin(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        """Log the request, apply auth/failure/latency switches, parse the JSON object body."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            parse_error = True
        else:
            parse_error = not isinstance(body, dict)
        failed = await self.admit(request, body)
        if failed is not None:
            return None, failed
        b = self.behaviour
        if parse_error:
            return None, self.error(
                400, "The request body is not valid JSON: send a JSON object.", "invalid_request_error"
            )
        assert isinstance(body, dict)
        model = request.match_info.get("deployment") or body.get("model")
        if not isinstance(model, str) or not model:
            return None, self.error(400, "you must provide a model parameter", "invalid_request_error")
        if b.models and model not in b.models:
            return None, self.error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            )
        body["model"] = model
        return body, None

    def missing(self, param: str) -> web.Response:
        return self.error(
            400,
            f"Missing required parameter: '{param}'.",
            "invalid_request_error",
            param=param,
            code="missing_required_parameter",
        )

    def invalid(self, param: str, message: str, code: str | None = None) -> web.Response:
        return self.error(400, message, "invalid_request_error", param=param, code=code)

    def unknown_function(self, body: dict[str, Any], name: Any, chat: bool) -> web.Response | None:
        """The 400 for a tool_choice that forces a function the request does not offer."""
        tools = body.get("tools")
        names = set()
        for tool in tools if isinstance(tools, list) else []:
            if isinstance(tool, dict) and tool.get("type") == "function":
                fn = tool.get("function") if chat else tool
                if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                    names.add(fn["name"])
        if isinstance(name, str) and name in names:
            return None
        return self.error(
            400,
            f"Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' "
            "parameter.",
            "invalid_request_error",
            param="tool_choice",
        )

    def plan(self, ask: replies.Ask, kind: str | None = None) -> Reply:
        """The reply to `ask` under the reply_kind (or `kind`), reply_tokens and cap switches."""
        b = self.behaviour
        return replies.plan(ask, kind or b.reply_kind, b.reply_tokens, b.ignore_max_tokens)

    def reported_usage(
        self, prompt: int, completion: int, reasoning: int = 0, cached: int = 0, *, chat: bool = True
    ) -> dict[str, Any]:
        """The usage object as this mock reports it (overridden counts, integers as strings)."""
        b = self.behaviour
        if b.usage_prompt_tokens is not None:
            prompt = b.usage_prompt_tokens
        if b.usage_completion_tokens is not None:
            completion = b.usage_completion_tokens
        if chat:
            reported = wire.usage(prompt, completion, reasoning, min(cached, prompt))
        else:
            reported = wire.plain_usage(prompt, completion)
        return wire.stringify_ints(reported) if b.usage_as_strings else reported

    async def stream(
        self, request: web.Request, pieces: list[Event], tail: list[Event]
    ) -> web.StreamResponse:
        """Send `pieces` (the content chunks), then `tail` (finish, usage, [DONE]) as SSE."""
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": wire.new_id("req_", 24),
            }
        )
        await resp.prepare(request)
        b = self.behaviour
        framer = wire.SSEFramer(b.sse_framing)
        delay = b.chunk_delay_ms / 1000
        cut = b.break_after_chunks
        stall = b.stall_before_usage_ms / 1000
        try:
            for i, piece in enumerate(pieces):
                if cut is not None and i >= cut:
                    if request.transport is not None:
                        request.transport.abort()  # the upstream "breaks": no finish, no usage, no [DONE]
                    return resp
                await resp.write(_frame(framer, piece))
                if delay:
                    await asyncio.sleep(delay)
            if stall:
                await asyncio.sleep(stall)
            for event in tail:
                await resp.write(_frame(framer, event))
            await resp.write_eof()
        except ConnectionResetError:  # the client left mid-stream
            pass
        return resp

    def json_answer(self, obj: dict[str, Any]) -> web.Response:
        return web.Response(
            body=wire.dumps(obj, spaced=self.behaviour.json_spacing),
            content_type=_JSON,
            headers={"x-request-id": wire.new_id("req_", 24)},
        )


def _frame(framer: wire.SSEFramer, event: Event) -> bytes:
    if isinstance(event, tuple):
        return framer.event(event[1], event=event[0])
    return framer.event(event)

"""The mock upstream's HTTP server (aiohttp): routes, behaviour switches and request log."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

from aikeys.mockupstream import tokens, wire

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


@dataclass
class Behaviour:
    """What the mock does; changed at run time with `PUT /_mock/config` (partial JSON)."""

    usage: bool = True  # include usage in responses (and in streams when asked for)
    reply_tokens: int = 16  # reply length when max_tokens does not cut it shorter
    latency_ms: float = 0.0  # wait before answering (before the first chunk when streaming)
    chunk_delay_ms: float = 0.0  # wait between stream chunks
    fail_status: int | None = None  # answer every request with this HTTP error ...
    fail_count: int | None = None  # ... for this many requests (None: until changed)
    break_after_chunks: int | None = None  # cut streams after this many content chunks
    reject_stream_options: bool = False  # behave like a backend that refuses stream_options
    models: list[str] = field(default_factory=list)  # known models; empty accepts any
    api_key: str | None = None  # required bearer / api-key value; None accepts any

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}")
        for key, value in changes.items():
            setattr(self, key, value)


class MockUpstream:
    """State of one mock server: its behaviour and the last requests it received."""

    def __init__(self, behaviour: Behaviour | None = None, log_size: int = 10_000):
        self.behaviour = behaviour or Behaviour()
        self.requests: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.started = int(time.time())

    # --- plumbing ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.chat)
        app.router.add_post("/openai/deployments/{deployment}/completions", self.completions)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.embeddings)
        app.router.add_get("/_mock/config", self.get_config)
        app.router.add_put("/_mock/config", self.put_config)
        app.router.add_get("/_mock/requests", self.get_requests)
        app.router.add_delete("/_mock/requests", self.clear_requests)
        app.router.add_get("/healthz", self.healthz)
        return app

    @staticmethod
    def _error(
        status: int, message: str, type_: str, param: str | None = None, code: str | None = None
    ) -> web.Response:
        return web.Response(
            status=status, body=wire.dumps(wire.error(message, type_, param, code)), content_type=_JSON
        )

    def _check_auth(self, request: web.Request) -> web.Response | None:
        expected = self.behaviour.api_key
        if expected is None:
            return None
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else request.headers.get("api-key", "")
        if given == expected:
            return None
        shown = (given[:3] + "*" * 4 + given[-4:]) if len(given) > 8 else "<none>"
        return self._error(
            401, f"Incorrect API key provided: {shown}.", "invalid_request_error", code="invalid_api_key"
        )

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        """Log the request, apply auth/failure/latency switches, parse the JSON object body."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            parse_error = True
        else:
            parse_error = not isinstance(body, dict)
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
                "time": time.time(),
            }
        )
        b = self.behaviour
        denied = self._check_auth(request)
        if denied is not None:
            return None, denied
        status = b.fail_status
        if status is not None:
            if b.fail_count is not None:
                b.fail_count -= 1
                if b.fail_count <= 0:
                    b.fail_status = b.fail_count = None
            type_, code = _FAILURES.get(status, ("server_error", None))
            message = f"Injected failure: HTTP {status} from the mock upstream."
            return None, self._error(status, message, type_, code=code)
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        if parse_error:
            return None, self._error(
                400, "The request body is not valid JSON: send a JSON object.", "invalid_request_error"
            )
        assert isinstance(body, dict)
        model = request.match_info.get("deployment") or body.get("model")
        if not isinstance(model, str) or not model:
            return None, self._error(400, "you must provide a model parameter", "invalid_request_error")
        if b.models and model not in b.models:
            return None, self._error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            )
        body["model"] = model
        return body, None

    @staticmethod
    def _missing(param: str) -> web.Response:
        return MockUpstream._error(
            400,
            f"Missing required parameter: '{param}'.",
            "invalid_request_error",
            param=param,
            code="missing_required_parameter",
        )

    def _reply_length(self, body: dict[str, Any]) -> tuple[int, str]:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        natural = self.behaviour.reply_tokens
        if isinstance(limit, int) and 0 < limit < natural:
            return limit, "length"
        return natural, "stop"

    async def _stream(
        self, request: web.Request, pieces: list[bytes], tail: list[bytes]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": wire.new_id("req_", 24),
            }
        )
        await resp.prepare(request)
        delay = self.behaviour.chunk_delay_ms / 1000
        cut = self.behaviour.break_after_chunks
        for i, piece in enumerate(pieces):
            if cut is not None and i >= cut:
                if request.transport is not None:
                    request.transport.abort()  # the upstream "breaks": no finish, no usage, no [DONE]
                return resp
            await resp.write(piece)
            if delay:
                await asyncio.sleep(delay)
        for piece in tail:
            await resp.write(piece)
        await resp.write_eof()
        return resp

    @staticmethod
    def _json(obj: dict[str, Any]) -> web.Response:
        return web.Response(
            body=wire.dumps(obj), content_type=_JSON, headers={"x-request-id": wire.new_id("req_", 24)}
        )

    # --- OpenAI routes -----------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        assert body is not None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._missing("messages")
        stream_options = body.get("stream_options")
        if stream_options is not None and self.behaviour.reject_stream_options:
            return self._error(
                400,
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
                param="stream_options",
            )
        n = body.get("n") or 1
        prompt = tokens.count_messages(messages)
        length, reason = self._reply_length(body)
        words = tokens.reply_words(length)
        model = body["model"]
        if not body.get("stream"):
            return self._json(
                wire.chat_completion(
                    model, ["".join(words)] * n, reason, prompt, length * n, self.behaviour.usage
                )
            )
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunks = wire.ChunkStream(model, with_usage_field=include_usage and self.behaviour.usage)
        pieces: list[bytes] = []
        for i in range(n):
            pieces.append(chunks.role(i))
            pieces.extend(chunks.content(i, w) for w in words)
        tail = [chunks.finish(i, reason) for i in range(n)]
        if include_usage and self.behaviour.usage:
            tail.append(chunks.usage(prompt, length * n))
        tail.append(wire.SSE_DONE)
        return await self._stream(request, pieces, tail)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        assert body is not None
        if "prompt" not in body:
            return self._missing("prompt")
        prompt = tokens.count_prompt(body["prompt"])
        length, reason = self._reply_length(body)
        words = tokens.reply_words(length)
        model = body["model"]
        if not body.get("stream"):
            return self._json(
                wire.text_completion(model, ["".join(words)], reason, prompt, length, self.behaviour.usage)
            )
        stream_options = body.get("stream_options")
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        with_usage = include_usage and self.behaviour.usage
        base = {
            "id": wire.new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": wire.FINGERPRINT,
        }
        pieces = [wire.completion_chunk(base, w, None, with_usage) for w in words]
        tail = [wire.completion_chunk(base, "", reason, with_usage)]
        if with_usage:
            tail.append(
                wire.sse(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": length,
                            "total_tokens": prompt + length,
                        },
                    }
                )
            )
        tail.append(wire.SSE_DONE)
        return await self._stream(request, pieces, tail)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        assert body is not None
        inputs = body.get("input")
        if inputs is None or inputs in ("", []):
            return self._missing("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(x, int) for x in inputs)):
            count = 1
        else:
            count = len(inputs)
        dims = body.get("dimensions") or 1536
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self._error(
                400,
                f"Invalid value for 'encoding_format': '{fmt}'. Use 'float' or 'base64'.",
                "invalid_request_error",
                param="encoding_format",
            )
        return self._json(wire.embeddings(body["model"], count, int(dims), fmt, tokens.count_prompt(inputs)))

    async def models(self, request: web.Request) -> web.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        known = self.behaviour.models or ["mock-gpt", "mock-embedding"]
        return self._json(wire.model_list(known, self.started))

    # --- control routes ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.behaviour))

    async def put_config(self, request: web.Request) -> web.Response:
        try:
            self.behaviour.update(await request.json())
        except (ValueError, TypeError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(asdict(self.behaviour))

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.requests))

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return web.Response(status=204)


def serve(host: str, port: int, behaviour: Behaviour) -> None:
    """Run the mock until interrupted (uvloop when available)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        MockUpstream(behaviour).app(), host=host, port=port, access_log=None, print=None, handle_signals=True
    )

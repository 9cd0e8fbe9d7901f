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


REPLY_KINDS = ("text", "tool_call", "reasoning")


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
    ignore_max_tokens: bool = False  # generate reply_tokens whatever max_tokens says
    sse_framing: str = "standard"  # one of wire.FRAMINGS, for every streamed response
    json_spacing: bool = False  # non-streamed JSON bodies with ", " and ": " separators
    usage_as_strings: bool = False  # every integer in usage sent as a JSON string
    reply_kind: str = "text"  # chat answers: "text", "tool_call" or "reasoning"
    usage_prompt_tokens: int | None = None  # report this prompt_tokens instead of the true count
    usage_completion_tokens: int | None = None  # report this completion_tokens instead
    stall_before_usage_ms: float = 0.0  # streams: pause after the content, before the finish tail

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}")
        framing = changes.get("sse_framing", self.sse_framing)
        if framing not in wire.FRAMINGS:
            raise ValueError(f"sse_framing must be one of {', '.join(wire.FRAMINGS)}")
        kind = changes.get("reply_kind", self.reply_kind)
        if kind not in REPLY_KINDS:
            raise ValueError(f"reply_kind must be one of {', '.join(REPLY_KINDS)}")
        for key, value in changes.items():
            setattr(self, key, value)


@dataclass
class Reply:
    """One generated answer (every choice of a request gets the same one)."""

    kind: str
    reasoning: list[str]  # one-token pieces of reasoning_content
    content: list[str]  # one-token pieces of the text, or of the tool call's arguments
    finish_reason: str

    @property
    def generated(self) -> int:
        return len(self.reasoning) + len(self.content)


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

    def _error(
        self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None
    ) -> web.Response:
        body = wire.dumps(wire.error(message, type_, param, code), spaced=self.behaviour.json_spacing)
        return web.Response(status=status, body=body, content_type=_JSON)

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

    def _missing(self, param: str) -> web.Response:
        return self._error(
            400,
            f"Missing required parameter: '{param}'.",
            "invalid_request_error",
            param=param,
            code="missing_required_parameter",
        )

    def _reply(self, body: dict[str, Any], kind: str) -> Reply:
        """What to generate: `reply_tokens` per part (reasoning, then the answer), cut to
        max_completion_tokens / max_tokens in total unless the mock ignores the cap."""
        b = self.behaviour
        natural = max(b.reply_tokens, 0)
        n_reasoning = natural if kind == "reasoning" else 0
        n_content = natural
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        cut = not b.ignore_max_tokens and isinstance(limit, int) and 0 < limit < n_reasoning + n_content
        if cut:
            assert isinstance(limit, int)
            n_reasoning = min(n_reasoning, limit)
            n_content = limit - n_reasoning
        if kind == "tool_call":
            content = tokens.tool_argument_pieces(natural)[:n_content]
            finish = "length" if cut else "tool_calls"
        else:
            content = tokens.reply_words(n_content)
            finish = "length" if cut else "stop"
        return Reply(kind, tokens.reasoning_words(n_reasoning), content, finish)

    def _usage(
        self, prompt: int, completion: int, reasoning: int = 0, *, chat: bool = True
    ) -> dict[str, Any]:
        """The usage object as this mock reports it (overridden counts, integers as strings)."""
        b = self.behaviour
        if b.usage_prompt_tokens is not None:
            prompt = b.usage_prompt_tokens
        if b.usage_completion_tokens is not None:
            completion = b.usage_completion_tokens
        reported = wire.usage(prompt, completion, reasoning) if chat else wire.plain_usage(prompt, completion)
        return wire.stringify_ints(reported) if b.usage_as_strings else reported

    async def _stream(
        self, request: web.Request, pieces: list[dict[str, Any]], tail: list[dict[str, Any] | str]
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
                await resp.write(framer.event(piece))
                if delay:
                    await asyncio.sleep(delay)
            if stall:
                await asyncio.sleep(stall)
            for event in tail:
                await resp.write(framer.event(event))
            await resp.write_eof()
        except ConnectionResetError:  # the client left mid-stream
            pass
        return resp

    def _json(self, obj: dict[str, Any]) -> web.Response:
        return web.Response(
            body=wire.dumps(obj, spaced=self.behaviour.json_spacing),
            content_type=_JSON,
            headers={"x-request-id": wire.new_id("req_", 24)},
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
        n = _count_param(body, "n")
        if n is None:
            return self._invalid_count("n")
        prompt = tokens.count_messages(messages)
        reply = self._reply(body, self.behaviour.reply_kind)
        call_ids = [wire.new_id("call_", 24) for _ in range(n)]
        model = body["model"]
        with_usage = self.behaviour.usage
        if not body.get("stream"):
            answers = [_message(reply, call_id) for call_id in call_ids]
            usage = self._usage(prompt, reply.generated * n, len(reply.reasoning) * n) if with_usage else None
            return self._json(wire.chat_completion(model, answers, reply.finish_reason, usage))
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunks = wire.ChunkStream(model, with_usage_field=include_usage and with_usage)
        pieces: list[dict[str, Any]] = []
        for i, call_id in enumerate(call_ids):
            if reply.kind == "tool_call":
                pieces.append(chunks.tool_call_start(i, call_id))
                pieces.extend(chunks.tool_call_arguments(i, p) for p in reply.content)
            else:
                pieces.append(chunks.role(i))
                pieces.extend(chunks.reasoning(i, p) for p in reply.reasoning)
                pieces.extend(chunks.content(i, p) for p in reply.content)
        tail: list[dict[str, Any] | str] = [chunks.finish(i, reply.finish_reason) for i in range(n)]
        if include_usage and with_usage:
            tail.append(chunks.usage(self._usage(prompt, reply.generated * n, len(reply.reasoning) * n)))
        tail.append(wire.DONE)
        return await self._stream(request, pieces, tail)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        assert body is not None
        if "prompt" not in body:
            return self._missing("prompt")
        batch = self._batch(body)
        if isinstance(batch, web.Response):
            return batch
        prompts, n, best_of = batch
        stream = bool(body.get("stream"))
        prompt = sum(tokens.count_prompt(p) for p in prompts)
        reply = self._reply(body, "text")
        generated = reply.generated * best_of * len(prompts)  # every candidate is billed
        choices = n * len(prompts)
        model = body["model"]
        with_usage = self.behaviour.usage
        if not stream:
            usage = self._usage(prompt, generated, chat=False) if with_usage else None
            text = "".join(reply.content)
            return self._json(wire.text_completion(model, [text] * choices, reply.finish_reason, usage))
        stream_options = body.get("stream_options")
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunks = wire.CompletionChunks(model, with_usage_field=include_usage and with_usage)
        pieces = [chunks.text(i, p) for i in range(choices) for p in reply.content]
        tail: list[dict[str, Any] | str] = [chunks.text(i, "", reply.finish_reason) for i in range(choices)]
        if include_usage and with_usage:
            tail.append(chunks.usage(self._usage(prompt, generated, chat=False)))
        tail.append(wire.DONE)
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
        prompt = tokens.count_prompt(inputs)
        if self.behaviour.usage_prompt_tokens is not None:
            prompt = self.behaviour.usage_prompt_tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt}
        if self.behaviour.usage_as_strings:
            usage = wire.stringify_ints(usage)
        return self._json(wire.embeddings(body["model"], count, int(dims), fmt, usage))

    def _batch(self, body: dict[str, Any]) -> tuple[list[Any], int, int] | web.Response:
        """A completions request's prompts, `n` and `best_of` (or the 400 to answer)."""
        prompts = _prompts(body["prompt"])
        if prompts is None:
            return self._error(
                400,
                "Invalid value for 'prompt': expected a string, an array of strings, an array of "
                "tokens or an array of token arrays.",
                "invalid_request_error",
                param="prompt",
            )
        n = _count_param(body, "n")
        if n is None:
            return self._invalid_count("n")
        best_of = _count_param(body, "best_of", default=n)
        if best_of is None:
            return self._invalid_count("best_of")
        if best_of < n:
            return self._error(
                400, "best_of must be greater than or equal to n.", "invalid_request_error", param="best_of"
            )
        if body.get("stream") and best_of > n:
            return self._error(
                400,
                "Cannot stream results with best_of greater than n.",
                "invalid_request_error",
                param="best_of",
            )
        return prompts, n, best_of

    def _invalid_count(self, param: str) -> web.Response:
        return self._error(
            400,
            f"Invalid value for '{param}': expected an integer >= 1.",
            "invalid_request_error",
            param=param,
        )

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


def _count_param(body: dict[str, Any], name: str, default: int = 1) -> int | None:
    """`n` / `best_of`: absent or null means `default`; otherwise an integer >= 1 (None: invalid)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _prompts(prompt: Any) -> list[Any] | None:
    """The prompts of a completions request: a string, strings, token ids or token-id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
        return [prompt]
    if all(isinstance(x, str) for x in prompt):
        return list(prompt)
    if all(
        isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        for x in prompt
    ):
        return list(prompt)
    return None


def _message(reply: Reply, call_id: str) -> dict[str, Any]:
    """The non-streamed `message` of one choice."""
    if reply.kind == "tool_call":
        return wire.tool_call_message(call_id, "".join(reply.content))
    if reply.kind == "reasoning":
        return wire.reasoning_message("".join(reply.reasoning), "".join(reply.content) or None)
    return wire.text_message("".join(reply.content))


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

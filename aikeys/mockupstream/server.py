"""The mock upstream's HTTP server (aiohttp): routes, behaviour switches and request log."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

from aikeys.mockupstream import replies, responses, tokens, wire
from aikeys.mockupstream.cache import PromptCache
from aikeys.mockupstream.replies import Reply

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
    break_after_chunks: int | None = None  # cut streams after this many content chunks (Responses: events)
    reject_stream_options: bool = False  # behave like a backend that refuses stream_options
    models: list[str] = field(default_factory=list)  # known models; empty accepts any
    api_key: str | None = None  # required bearer / api-key value; None accepts any
    ignore_max_tokens: bool = False  # generate reply_tokens whatever max_tokens says
    sse_framing: str = "standard"  # one of wire.FRAMINGS, for every streamed response
    json_spacing: bool = False  # non-streamed JSON bodies with ", " and ": " separators
    usage_as_strings: bool = False  # every integer in usage sent as a JSON string
    reply_kind: str = "text"  # "text" (see replies.plan), forced "tool_call" or "reasoning" answers
    usage_prompt_tokens: int | None = None  # report this prompt_tokens (input_tokens) instead of the count
    usage_completion_tokens: int | None = None  # report this completion_tokens (output_tokens) instead
    stall_before_usage_ms: float = 0.0  # streams: pause after the last delta, before the finish tail
    late_ms: float = 0.0  # JSON answers: generated (and billed) at once, sent this much later
    reset: bool = False  # JSON answers: generated (and billed), then the connection is cut unanswered
    fault_count: int | None = None  # late_ms / reset apply to this many answers (None: until changed)
    prompt_cache: bool = True  # report (and bill) a prompt prefix seen before as cached tokens (cache.py)
    cache_min_tokens: int = 1024  # ... when at least this many (OpenAI: prompts of 1024 tokens or more)
    cache_increment: int = 128  # ... rounded down to a multiple of this (OpenAI: 128)

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
        for key, least in (("cache_min_tokens", 0), ("cache_increment", 1)):
            value = changes.get(key, getattr(self, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key} must be an integer >= {least}")
        for key, value in changes.items():
            setattr(self, key, value)


Event = dict[str, Any] | str | tuple[str, dict[str, Any]]  # a stream event; a tuple has an event type
STORED_RESPONSES = 10_000  # the newest stored responses kept for retrieval and previous_response_id


@dataclass
class Stored:
    """A response kept (`store` not false) for GET/DELETE/cancel/input_items and continuations."""

    response: dict[str, Any]  # the finished response object
    input_items: list[dict[str, Any]]  # this request's input, as input_items lists it
    context: list[Any]  # the conversation so far: earlier turns, this input, this output
    background: bool = False
    status: str = "completed"  # a background response is "queued" until first retrieved


LOG_ENTRY = web.RequestKey("log_entry", dict)


@web.middleware
async def _log_status(request: web.Request, handler: Any) -> web.StreamResponse:
    """Record each logged request's answer status (what was billed is what answered 2xx)."""
    response: web.StreamResponse = await handler(request)
    entry = request.get(LOG_ENTRY)
    if entry is not None:
        entry["status"] = response.status
    return response


class MockUpstream:
    """State of one mock server: its behaviour and the last requests it received."""

    def __init__(self, behaviour: Behaviour | None = None, log_size: int = 10_000):
        self.behaviour = behaviour or Behaviour()
        self.requests: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.started = int(time.time())
        self.stored: OrderedDict[str, Stored] = OrderedDict()
        self.cache = PromptCache()

    # --- plumbing ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def faults(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._faults(request, handler)

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_log_status, faults])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.chat)
        app.router.add_post("/openai/deployments/{deployment}/completions", self.completions)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.embeddings)
        app.router.add_post("/openai/deployments/{deployment}/responses", self.create_response)
        for base in ("/v1/responses", "/openai/v1/responses", "/openai/responses"):
            app.router.add_post(base, self.create_response)
            app.router.add_get(base + "/{id}", self.get_response)
            app.router.add_delete(base + "/{id}", self.delete_response)
            app.router.add_post(base + "/{id}/cancel", self.cancel_response)
            app.router.add_get(base + "/{id}/input_items", self.list_input_items)
        app.router.add_get("/_mock/config", self.get_config)
        app.router.add_put("/_mock/config", self.put_config)
        app.router.add_get("/_mock/requests", self.get_requests)
        app.router.add_delete("/_mock/requests", self.clear_requests)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
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

    def _bill(self, request: web.Request, input_tokens: int, output_tokens: int, cached: int = 0) -> None:
        """What this generation costs at a provider: the honest counts, whatever usage reports
        (`cached` of the input tokens at the cached-input price)."""
        entry = request.get(LOG_ENTRY)
        if entry is not None:
            entry["billed"] = {"input": input_tokens, "output": output_tokens, "cached": cached}

    def _cached(self, model: str, parts: list[tuple[Any, int]]) -> int:
        """The cached prompt tokens of an input of `parts` (messages or items and their tokens)."""
        b = self.behaviour
        if not b.prompt_cache:
            return 0
        return self.cache.cached(model, parts, b.cache_increment, b.cache_min_tokens)

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

    async def _admit(self, request: web.Request, body: Any) -> web.Response | None:
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
        denied = self._check_auth(request)
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
            return self._error(status, message, type_, code=code)
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        return None

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
        failed = await self._admit(request, body)
        if failed is not None:
            return None, failed
        b = self.behaviour
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

    def _plan(self, ask: replies.Ask, kind: str | None = None) -> Reply:
        """The reply to `ask` under the reply_kind (or `kind`), reply_tokens and cap switches."""
        b = self.behaviour
        return replies.plan(ask, kind or b.reply_kind, b.reply_tokens, b.ignore_max_tokens)

    def _usage(
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

    async def _stream(
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
        problem = self._check_chat_request(body)
        if problem is not None:
            return problem
        n = _count_param(body, "n")
        if n is None:
            return self._invalid_count("n")
        stream_options = body.get("stream_options")
        prompt = tokens.count_messages(body["messages"])
        model = body["model"]
        cached = self._cached(model, [(m, tokens.message_tokens(m)) for m in body["messages"]])
        reply = self._plan(replies.from_chat(body))
        call_ids = [[wire.new_id("call_", 24) for _ in reply.calls] for _ in range(n)]
        with_usage = self.behaviour.usage
        self._bill(request, prompt, reply.generated * n, cached)
        generated, reasoning = reply.generated * n, reply.reasoning_tokens * n
        usage = self._usage(prompt, generated, reasoning, cached) if with_usage else None
        if not body.get("stream"):
            answers = [_message(reply, ids) for ids in call_ids]
            return self._json(wire.chat_completion(model, answers, reply.finish_reason, usage))
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunks = wire.ChunkStream(model, with_usage_field=include_usage and with_usage)
        pieces: list[Event] = []
        for i, ids in enumerate(call_ids):
            pieces.extend(_chat_deltas(chunks, i, reply, ids))
        tail: list[Event] = [chunks.finish(i, reply.finish_reason) for i in range(n)]
        if usage is not None and include_usage:
            tail.append(chunks.usage(usage))
        tail.append(wire.DONE)
        return await self._stream(request, pieces, tail)

    def _check_chat_request(self, body: dict[str, Any]) -> web.Response | None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._missing("messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                return self._invalid(
                    f"messages[{i}]",
                    f"Invalid type for 'messages[{i}]': expected an object, but got {_json_type(message)} "
                    "instead.",
                    "invalid_type",
                )
        if body.get("stream_options") is not None and self.behaviour.reject_stream_options:
            return self._error(
                400,
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
                param="stream_options",
            )
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object" and not _says_json(messages):
            return self._error(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                "'json_object'.",
                "invalid_request_error",
                param="messages",
            )
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            return self._unknown_function(body, choice["function"].get("name"), chat=True)
        return None

    def _unknown_function(self, body: dict[str, Any], name: Any, chat: bool) -> web.Response | None:
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
        return self._error(
            400,
            f"Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' "
            "parameter.",
            "invalid_request_error",
            param="tool_choice",
        )

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
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        reply = self._plan(replies.Ask(limit=limit), kind="text")
        generated = reply.generated * best_of * len(prompts)  # every candidate is billed
        self._bill(request, prompt, generated)
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
        pieces: list[Event] = [chunks.text(i, p) for i in range(choices) for p in reply.content]
        tail: list[Event] = [chunks.text(i, "", reply.finish_reason) for i in range(choices)]
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
        self._bill(request, prompt, 0)
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

    async def model(self, request: web.Request) -> web.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if self.behaviour.models and model not in self.behaviour.models:
            return self._error(
                404,
                f"The model '{model}' does not exist",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return self._json(wire.model_object(model, self.started))

    # --- the Responses API -------------------------------------------------------------------------

    def _invalid(self, param: str, message: str, code: str | None = None) -> web.Response:
        return self._error(400, message, "invalid_request_error", param=param, code=code)

    def _check_response_request(self, body: dict[str, Any]) -> web.Response | None:
        """The 400s OpenAI answers to a malformed create request (the ones the mock checks)."""
        problem = self._check_response_input(body)
        if problem is not None:
            return problem
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            for key in ("name", "schema"):
                if key not in fmt:
                    return self._missing(f"text.format.{key}")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            given = body.get("input")
            if not _says_json([given, body.get("instructions")]):
                return self._invalid(
                    "input",
                    "Response input messages must contain the word 'json' in some form to use "
                    "'text.format' of type 'json_object'.",
                )
        choice = body.get("tool_choice")
        forced = choice.get("name") if isinstance(choice, dict) and choice.get("type") == "function" else None
        unknown = self._unknown_function(body, forced, chat=False) if forced is not None else None
        return self._check_previous(body.get("previous_response_id")) if unknown is None else unknown

    def _check_previous(self, previous: Any) -> web.Response | None:
        if previous is not None and not isinstance(previous, str):
            return self._invalid(
                "previous_response_id",
                "Invalid type for 'previous_response_id': expected a string, but got "
                f"{_json_type(previous)} instead.",
                "invalid_type",
            )
        if previous is not None and previous not in self.stored:
            return self._invalid(
                "previous_response_id",
                f"Previous response with id '{previous}' not found.",
                "previous_response_not_found",
            )
        return None

    def _check_response_input(self, body: dict[str, Any]) -> web.Response | None:
        given = body.get("input")
        if given is None and body.get("previous_response_id") is None:
            return self._missing("input")
        if given is not None and not isinstance(given, str | list):
            return self._invalid(
                "input",
                "Invalid type for 'input': expected one of a string or array of input items, but got "
                f"{_json_type(given)} instead.",
                "invalid_type",
            )
        cap = body.get("max_output_tokens")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)):
            return self._invalid(
                "max_output_tokens",
                "Invalid type for 'max_output_tokens': expected an integer, but got "
                f"{_json_type(cap)} instead.",
                "invalid_type",
            )
        if isinstance(cap, int) and cap < responses.MIN_OUTPUT_TOKENS:
            return self._invalid(
                "max_output_tokens",
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                f"{responses.MIN_OUTPUT_TOKENS}, but got {cap} instead.",
                "integer_below_min_value",
            )
        return None

    def _response_usage(self, prompt: int, output: int, reasoning: int, cached: int) -> dict[str, Any]:
        b = self.behaviour
        if b.usage_prompt_tokens is not None:
            prompt = b.usage_prompt_tokens
        if b.usage_completion_tokens is not None:
            output = b.usage_completion_tokens
        reported = responses.usage(prompt, output, reasoning, min(cached, prompt))
        return wire.stringify_ints(reported) if b.usage_as_strings else reported

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        assert body is not None
        problem = self._check_response_request(body)
        if problem is not None:
            return problem
        b = self.behaviour
        previous = self.stored.get(body.get("previous_response_id") or "")
        given = body.get("input")
        items: list[Any] = [given] if isinstance(given, str) else list(given or [])
        context = (previous.context if previous else []) + items
        ask = replies.from_responses(body, context)
        reply = self._plan(ask)
        include = body.get("include")
        include = include if isinstance(include, list) else []
        options = body.get("stream_options")
        obfuscate = not (isinstance(options, dict) and options.get("include_obfuscation") is False)
        generation = responses.generate(
            reply,
            reasoning_item=ask.effort is not None and ask.effort != "none",
            encrypted="reasoning.encrypted_content" in include,
            obfuscate=obfuscate,
        )
        instructions = body.get("instructions")
        prompt = tokens.count_items(context, instructions)
        parts = [(item, tokens.item_tokens(item)) for item in context]
        if instructions is not None:
            parts.insert(0, ({"instructions": instructions}, tokens.instructions_tokens(instructions)))
        cached = self._cached(body["model"], parts)
        self._bill(request, prompt, reply.generated, cached)
        usage = (
            self._response_usage(prompt, reply.generated, reply.reasoning_tokens, cached) if b.usage else None
        )
        resp_id, created = responses.hex_id("resp_"), int(time.time())
        status = "incomplete" if reply.cut else "completed"
        final = responses.response_object(
            body, resp_id, created, status, generation.output, usage, with_usage=b.usage
        )
        background = bool(body.get("background")) and not body.get("stream")
        if body.get("store") is not False:
            self._store(
                resp_id,
                Stored(
                    final,
                    [responses.input_item(item) for item in items],
                    context + generation.output,
                    background=background,
                    status="queued" if background else status,
                ),
            )
        if not body.get("stream"):
            if background:
                return self._json(responses.response_object(body, resp_id, created, "queued", [], None))
            return self._json(final)
        start = responses.response_object(
            body, resp_id, created, "in_progress", [], None, service_tier="auto"
        )
        events = responses.number(
            [
                responses.lifecycle("response.created", start),
                responses.lifecycle("response.in_progress", start),
                *generation.events,
                responses.lifecycle(f"response.{status}", final),
            ]
        )
        framed: list[Event] = [(e["type"], e) for e in events]
        deltas = [i for i, e in enumerate(events) if e["type"].endswith(".delta")]
        split = deltas[-1] + 1 if deltas else len(events) - 1
        return await self._stream(request, framed[:split], framed[split:])

    def _store(self, resp_id: str, stored: Stored) -> None:
        self.stored[resp_id] = stored
        while len(self.stored) > STORED_RESPONSES:
            self.stored.popitem(last=False)

    async def _stored(self, request: web.Request) -> tuple[Stored | None, web.Response | None]:
        """Log a request about a stored response and find it (or the 404 to answer)."""
        failed = await self._admit(request, None)
        if failed is not None:
            return None, failed
        resp_id = request.match_info["id"]
        stored = self.stored.get(resp_id)
        if stored is None:
            return None, self._error(404, f"Response with id '{resp_id}' not found.", "invalid_request_error")
        if stored.status == "queued":  # a background response is done once it is looked at
            stored.status = stored.response["status"]
        return stored, None

    async def get_response(self, request: web.Request) -> web.Response:
        stored, failed = await self._stored(request)
        if failed is not None:
            return failed
        assert stored is not None
        return self._json(stored.response)

    async def delete_response(self, request: web.Request) -> web.Response:
        stored, failed = await self._stored(request)
        if failed is not None:
            return failed
        assert stored is not None
        resp_id = stored.response["id"]
        del self.stored[resp_id]
        return self._json({"id": resp_id, "object": "response.deleted", "deleted": True})

    async def cancel_response(self, request: web.Request) -> web.Response:
        failed = await self._admit(request, None)
        if failed is not None:
            return failed
        resp_id = request.match_info["id"]
        stored = self.stored.get(resp_id)
        if stored is None:
            return self._error(404, f"Response with id '{resp_id}' not found.", "invalid_request_error")
        if not stored.background:
            return self._error(
                400, "Only responses created with background=true can be cancelled.", "invalid_request_error"
            )
        if stored.status == "queued":
            stored.status = "cancelled"
            stored.response = {**stored.response, "status": "cancelled", "completed_at": None, "output": []}
            stored.response["usage"] = None
        return self._json(stored.response)

    async def list_input_items(self, request: web.Request) -> web.Response:
        stored, failed = await self._stored(request)
        if failed is not None:
            return failed
        assert stored is not None
        items = list(stored.input_items)
        if request.query.get("order", "desc") != "asc":
            items.reverse()
        after = request.query.get("after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), 100)
        except ValueError:
            return self._invalid("limit", "Invalid value for 'limit': expected an integer.", "invalid_type")
        page = items[:limit]
        return self._json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

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


def _says_json(messages: Any) -> bool:
    """Whether the word "json" appears (in any case) in the texts of messages or input items."""
    return "json" in json.dumps(messages, ensure_ascii=False).lower()


def _json_type(value: Any) -> str:
    """How OpenAI's errors name a JSON value's type ("an object", "a string", ...)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


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


def _message(reply: Reply, call_ids: list[str]) -> dict[str, Any]:
    """The non-streamed `message` of one choice."""
    if reply.calls:
        calls = [(cid, call.name, call.arguments) for cid, call in zip(call_ids, reply.calls, strict=True)]
        message = wire.tool_calls_message(calls)
        if reply.kind == "reasoning":
            message = {
                "role": "assistant",
                "content": None,
                "reasoning_content": "".join(reply.reasoning),
            } | message
        return message
    if reply.kind == "reasoning":
        return wire.reasoning_message("".join(reply.reasoning), reply.text or None)
    return wire.text_message(reply.text)


def _chat_deltas(chunks: wire.ChunkStream, index: int, reply: Reply, call_ids: list[str]) -> list[Event]:
    """The content chunks of one choice, as OpenAI streams them: a single tool call's header
    rides on the first delta; several calls follow a bare role delta, one after the other."""
    deltas: list[Event] = []
    shown = reply.kind == "reasoning"
    if reply.calls and not shown and len(reply.calls) == 1:
        deltas.append(chunks.tool_call_start(index, call_ids[0], reply.calls[0].name))
        deltas.extend(chunks.tool_call_arguments(index, p) for p in reply.calls[0].pieces)
        return deltas
    if reply.calls and not shown:
        deltas.append(chunks.calls_role(index))
    else:
        deltas.append(chunks.role(index))
    deltas.extend(chunks.reasoning(index, p) for p in reply.reasoning)
    deltas.extend(chunks.content(index, p) for p in reply.content)
    for j, (cid, call) in enumerate(zip(call_ids, reply.calls, strict=True)):
        deltas.append(chunks.tool_call_start(index, cid, call.name, call=j, first=False))
        deltas.extend(chunks.tool_call_arguments(index, p, call=j) for p in call.pieces)
    return deltas


def _frame(framer: wire.SSEFramer, event: Event) -> bytes:
    if isinstance(event, tuple):
        return framer.event(event[1], event=event[0])
    return framer.event(event)


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

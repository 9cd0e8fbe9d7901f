"""The routes of OpenAI's Responses API: create (JSON, typed-event streams, background), and the
stored responses behind retrieve, delete, cancel, input_items and `previous_response_id`. The
objects and events themselves are built in `responses`."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aikeys_dev.mockupstream import checks, replies, responses, tokens, wire
from aikeys_dev.mockupstream.core import Core, Event

STORED_RESPONSES = 10_000  # the newest stored responses kept for retrieval and previous_response_id


@dataclass
class Stored:
    """A response kept (`store` not false) for GET/DELETE/cancel/input_items and continuations."""

    response: dict[str, Any]  # the finished response object
    input_items: list[dict[str, Any]]  # this request's input, as input_items lists it
    context: list[Any]  # the conversation so far: earlier turns, this input, this output
    background: bool = False
    status: str = "completed"  # a background response is "queued" until first retrieved


class ResponsesRoutes:
    """/v1/responses (and Azure's paths): what was created and stored, and the routes over it."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.stored: OrderedDict[str, Stored] = OrderedDict()

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
                    return self.core.missing(f"text.format.{key}")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            given = body.get("input")
            if not checks.says_json([given, body.get("instructions")]):
                return self.core.invalid(
                    "input",
                    "Response input messages must contain the word 'json' in some form to use "
                    "'text.format' of type 'json_object'.",
                )
        choice = body.get("tool_choice")
        forced = choice.get("name") if isinstance(choice, dict) and choice.get("type") == "function" else None
        unknown = self.core.unknown_function(body, forced, chat=False) if forced is not None else None
        return self._check_previous(body.get("previous_response_id")) if unknown is None else unknown

    def _check_previous(self, previous: Any) -> web.Response | None:
        if previous is not None and not isinstance(previous, str):
            return self.core.invalid(
                "previous_response_id",
                "Invalid type for 'previous_response_id': expected a string, but got "
                f"{checks.json_type(previous)} instead.",
                "invalid_type",
            )
        if previous is not None and previous not in self.stored:
            return self.core.invalid(
                "previous_response_id",
                f"Previous response with id '{previous}' not found.",
                "previous_response_not_found",
            )
        return None

    def _check_response_input(self, body: dict[str, Any]) -> web.Response | None:
        given = body.get("input")
        if given is None and body.get("previous_response_id") is None:
            return self.core.missing("input")
        if given is not None and not isinstance(given, str | list):
            return self.core.invalid(
                "input",
                "Invalid type for 'input': expected one of a string or array of input items, but got "
                f"{checks.json_type(given)} instead.",
                "invalid_type",
            )
        cap = body.get("max_output_tokens")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)):
            return self.core.invalid(
                "max_output_tokens",
                "Invalid type for 'max_output_tokens': expected an integer, but got "
                f"{checks.json_type(cap)} instead.",
                "invalid_type",
            )
        if isinstance(cap, int) and cap < responses.MIN_OUTPUT_TOKENS:
            return self.core.invalid(
                "max_output_tokens",
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                f"{responses.MIN_OUTPUT_TOKENS}, but got {cap} instead.",
                "integer_below_min_value",
            )
        return None

    def _response_usage(self, prompt: int, output: int, reasoning: int, cached: int) -> dict[str, Any]:
        b = self.core.behaviour
        if b.usage_prompt_tokens is not None:
            prompt = b.usage_prompt_tokens
        if b.usage_completion_tokens is not None:
            output = b.usage_completion_tokens
        reported = responses.usage(prompt, output, reasoning, min(cached, prompt))
        return wire.stringify_ints(reported) if b.usage_as_strings else reported

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self.core.begin(request)
        if failed is not None:
            return failed
        assert body is not None
        problem = self._check_response_request(body)
        if problem is not None:
            return problem
        b = self.core.behaviour
        previous = self.stored.get(body.get("previous_response_id") or "")
        given = body.get("input")
        items: list[Any] = [given] if isinstance(given, str) else list(given or [])
        context = (previous.context if previous else []) + items
        ask = replies.from_responses(body, context)
        reply = self.core.plan(ask)
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
        cached = self.core.cached(body["model"], parts)
        self.core.bill(request, prompt, reply.generated, cached)
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
                return self.core.json_answer(
                    responses.response_object(body, resp_id, created, "queued", [], None)
                )
            return self.core.json_answer(final)
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
        return await self.core.stream(request, framed[:split], framed[split:])

    def _store(self, resp_id: str, stored: Stored) -> None:
        self.stored[resp_id] = stored
        while len(self.stored) > STORED_RESPONSES:
            self.stored.popitem(last=False)

    async def _stored(self, request: web.Request) -> tuple[Stored | None, web.Response | None]:
        """Log a request about a stored response and find it (or the 404 to answer)."""
        failed = await self.core.admit(request, None)
        if failed is not None:
            return None, failed
        resp_id = request.match_info["id"]
        stored = self.stored.get(resp_id)
        if stored is None:
            return None, self.core.error(
                404, f"Response with id '{resp_id}' not found.", "invalid_request_error"
            )
        if stored.status == "queued":  # a background response is done once it is looked at
            stored.status = stored.response["status"]
        return stored, None

    async def get_response(self, request: web.Request) -> web.Response:
        stored, failed = await self._stored(request)
        if failed is not None:
            return failed
        assert stored is not None
        return self.core.json_answer(stored.response)

    async def delete_response(self, request: web.Request) -> web.Response:
        stored, failed = await self._stored(request)
        if failed is not None:
            return failed
        assert stored is not None
        resp_id = stored.response["id"]
        del self.stored[resp_id]
        return self.core.json_answer({"id": resp_id, "object": "response.deleted", "deleted": True})

    async def cancel_response(self, request: web.Request) -> web.Response:
        failed = await self.core.admit(request, None)
        if failed is not None:
            return failed
        resp_id = request.match_info["id"]
        stored = self.stored.get(resp_id)
        if stored is None:
            return self.core.error(404, f"Response with id '{resp_id}' not found.", "invalid_request_error")
        if not stored.background:
            return self.core.error(
                400, "Only responses created with background=true can be cancelled.", "invalid_request_error"
            )
        if stored.status == "queued":
            stored.status = "cancelled"
            stored.response = {**stored.response, "status": "cancelled", "completed_at": None, "output": []}
            stored.response["usage"] = None
        return self.core.json_answer(stored.response)

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
            return self.core.invalid(
                "limit", "Invalid value for 'limit': expected an integer.", "invalid_type"
            )
        page = items[:limit]
        return self.core.json_answer(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

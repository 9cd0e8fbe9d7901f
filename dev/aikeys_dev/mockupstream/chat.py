"""The routes of the classic OpenAI API: chat completions (with tool calls, reasoning and SSE
streams), completions (prompts, `n`, `best_of`), embeddings and the model list, each with the 400s
OpenAI answers to the malformed requests the mock checks."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aikeys_dev.mockupstream import checks, replies, tokens, wire
from aikeys_dev.mockupstream.core import Core, Event
from aikeys_dev.mockupstream.replies import Reply


class ChatRoutes:
    """/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models (and Azure's deployment paths)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self.core.begin(request)
        if failed is not None:
            return failed
        assert body is not None
        problem = self._check_chat_request(body)
        if problem is not None:
            return problem
        n = checks.count_param(body, "n")
        if n is None:
            return self._invalid_count("n")
        stream_options = body.get("stream_options")
        prompt = tokens.count_messages(body["messages"])
        model = body["model"]
        cached = self.core.cached(model, [(m, tokens.message_tokens(m)) for m in body["messages"]])
        reply = self.core.plan(replies.from_chat(body))
        call_ids = [[wire.new_id("call_", 24) for _ in reply.calls] for _ in range(n)]
        with_usage = self.core.behaviour.usage
        self.core.bill(request, prompt, reply.generated * n, cached)
        generated, reasoning = reply.generated * n, reply.reasoning_tokens * n
        usage = self.core.reported_usage(prompt, generated, reasoning, cached) if with_usage else None
        if not body.get("stream"):
            answers = [_message(reply, ids) for ids in call_ids]
            return self.core.json_answer(wire.chat_completion(model, answers, reply.finish_reason, usage))
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunks = wire.ChunkStream(model, with_usage_field=include_usage and with_usage)
        pieces: list[Event] = []
        for i, ids in enumerate(call_ids):
            pieces.extend(_chat_deltas(chunks, i, reply, ids))
        tail: list[Event] = [chunks.finish(i, reply.finish_reason) for i in range(n)]
        if usage is not None and include_usage:
            tail.append(chunks.usage(usage))
        tail.append(wire.DONE)
        return await self.core.stream(request, pieces, tail)

    def _check_chat_request(self, body: dict[str, Any]) -> web.Response | None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.core.missing("messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                return self.core.invalid(
                    f"messages[{i}]",
                    f"Invalid type for 'messages[{i}]': expected an object, but got "
                    f"{checks.json_type(message)} instead.",
                    "invalid_type",
                )
        if body.get("stream_options") is not None and self.core.behaviour.reject_stream_options:
            return self.core.error(
                400,
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
                param="stream_options",
            )
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object" and not checks.says_json(messages):
            return self.core.error(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                "'json_object'.",
                "invalid_request_error",
                param="messages",
            )
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            return self.core.unknown_function(body, choice["function"].get("name"), chat=True)
        return None

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self.core.begin(request)
        if failed is not None:
            return failed
        assert body is not None
        if "prompt" not in body:
            return self.core.missing("prompt")
        batch = self._batch(body)
        if isinstance(batch, web.Response):
            return batch
        prompts, n, best_of = batch
        stream = bool(body.get("stream"))
        prompt = sum(tokens.count_prompt(p) for p in prompts)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        reply = self.core.plan(replies.Ask(limit=limit), kind="text")
        generated = reply.generated * best_of * len(prompts)  # every candidate is billed
        self.core.bill(request, prompt, generated)
        choices = n * len(prompts)
        model = body["model"]
        with_usage = self.core.behaviour.usage
        if not stream:
            usage = self.core.reported_usage(prompt, generated, chat=False) if with_usage else None
            text = "".join(reply.content)
            return self.core.json_answer(
                wire.text_completion(model, [text] * choices, reply.finish_reason, usage)
            )
        stream_options = body.get("stream_options")
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunks = wire.CompletionChunks(model, with_usage_field=include_usage and with_usage)
        pieces: list[Event] = [chunks.text(i, p) for i in range(choices) for p in reply.content]
        tail: list[Event] = [chunks.text(i, "", reply.finish_reason) for i in range(choices)]
        if include_usage and with_usage:
            tail.append(chunks.usage(self.core.reported_usage(prompt, generated, chat=False)))
        tail.append(wire.DONE)
        return await self.core.stream(request, pieces, tail)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self.core.begin(request)
        if failed is not None:
            return failed
        assert body is not None
        inputs = body.get("input")
        if inputs is None or inputs in ("", []):
            return self.core.missing("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(x, int) for x in inputs)):
            count = 1
        else:
            count = len(inputs)
        dims = body.get("dimensions") or 1536
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self.core.error(
                400,
                f"Invalid value for 'encoding_format': '{fmt}'. Use 'float' or 'base64'.",
                "invalid_request_error",
                param="encoding_format",
            )
        prompt = tokens.count_prompt(inputs)
        self.core.bill(request, prompt, 0)
        if self.core.behaviour.usage_prompt_tokens is not None:
            prompt = self.core.behaviour.usage_prompt_tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt}
        if self.core.behaviour.usage_as_strings:
            usage = wire.stringify_ints(usage)
        return self.core.json_answer(wire.embeddings(body["model"], count, int(dims), fmt, usage))

    def _batch(self, body: dict[str, Any]) -> tuple[list[Any], int, int] | web.Response:
        """A completions request's prompts, `n` and `best_of` (or the 400 to answer)."""
        prompts = checks.prompts(body["prompt"])
        if prompts is None:
            return self.core.error(
                400,
                "Invalid value for 'prompt': expected a string, an array of strings, an array of "
                "tokens or an array of token arrays.",
                "invalid_request_error",
                param="prompt",
            )
        n = checks.count_param(body, "n")
        if n is None:
            return self._invalid_count("n")
        best_of = checks.count_param(body, "best_of", default=n)
        if best_of is None:
            return self._invalid_count("best_of")
        if best_of < n:
            return self.core.error(
                400, "best_of must be greater than or equal to n.", "invalid_request_error", param="best_of"
            )
        if body.get("stream") and best_of > n:
            return self.core.error(
                400,
                "Cannot stream results with best_of greater than n.",
                "invalid_request_error",
                param="best_of",
            )
        return prompts, n, best_of

    def _invalid_count(self, param: str) -> web.Response:
        return self.core.error(
            400,
            f"Invalid value for '{param}': expected an integer >= 1.",
            "invalid_request_error",
            param=param,
        )

    async def models(self, request: web.Request) -> web.Response:
        denied = self.core.check_auth(request)
        if denied is not None:
            return denied
        known = self.core.behaviour.models or ["mock-gpt", "mock-embedding"]
        return self.core.json_answer(wire.model_list(known, self.core.started))

    async def model(self, request: web.Request) -> web.Response:
        denied = self.core.check_auth(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if self.core.behaviour.models and model not in self.core.behaviour.models:
            return self.core.error(
                404,
                f"The model '{model}' does not exist",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return self.core.json_answer(wire.model_object(model, self.core.started))


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

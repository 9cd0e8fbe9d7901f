"""The Responses API's wire objects: the `response` object, its output items, its stream events.

Shapes, field order and id formats follow what api.openai.com sends (recorded exchanges): ids
are a prefix and 50 hex digits (`resp_`, `msg_`, `rs_`, `fc_`), calls' `call_id`s `call_` and
24 letters and digits; stream events carry `type` first, then their other fields in
alphabetical order (so `sequence_number` comes late), and delta events an `obfuscation`
string padding the delta to a multiple of 16 characters (left out when the request sets
`stream_options.include_obfuscation` to false).
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

from aikeys_dev.mockupstream.replies import Reply
from aikeys_dev.mockupstream.wire import new_id

_ALNUM = string.ascii_letters + string.digits
MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens


def hex_id(prefix: str) -> str:
    return prefix + secrets.token_hex(25)


def call_id() -> str:
    return new_id("call_", 24)


def _obfuscation(delta: str) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(16 - len(delta) % 16))


def usage(
    input_tokens: int, output_tokens: int, reasoning_tokens: int, cached_tokens: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def _echo_tool(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {
            "type": "function",
            "description": tool.get("description"),
            "name": tool.get("name"),
            "parameters": tool.get("parameters"),
            "strict": tool.get("strict", True),
        }
    return tool


def _echo_text(text: Any) -> dict[str, Any]:
    text = text if isinstance(text, dict) else {}
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        fmt = {
            "type": "json_schema",
            "description": fmt.get("description"),
            "name": fmt.get("name"),
            "schema": fmt.get("schema"),
            "strict": fmt.get("strict", True),
        }
    elif not isinstance(fmt, dict):
        fmt = {"type": "text"}
    return {"format": fmt, "verbosity": text.get("verbosity") or "medium"}


def _echo_reasoning(reasoning: Any) -> dict[str, Any]:
    if not isinstance(reasoning, dict):
        return {"effort": None, "summary": None}
    return {"effort": reasoning.get("effort") or "medium", "summary": reasoning.get("summary")}


def _given(body: dict[str, Any], key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def response_object(
    body: dict[str, Any],
    resp_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    *,
    with_usage: bool = True,
    service_tier: str = "default",
) -> dict[str, Any]:
    """The `response` object echoing `body` (the create request); `with_usage=False` leaves the
    `usage` key out (a provider that reports none)."""
    tools = body.get("tools")
    obj: dict[str, Any] = {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(body.get("background")),
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "frequency_penalty": 0.0,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "moderation": None,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "presence_penalty": 0.0,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "prompt_cache_retention": body.get("prompt_cache_retention"),
        "reasoning": _echo_reasoning(body.get("reasoning")),
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": service_tier,
        "store": body.get("store") is not False,
        "temperature": _given(body, "temperature", 1.0),
        "text": _echo_text(body.get("text")),
        "tool_choice": _given(body, "tool_choice", "auto"),
        "tools": [_echo_tool(t) for t in tools] if isinstance(tools, list) else [],
        "top_logprobs": _given(body, "top_logprobs", 0),
        "top_p": _given(body, "top_p", 1.0),
        "truncation": _given(body, "truncation", "disabled"),
        "usage": usage,
        "user": body.get("user"),
        "metadata": _given(body, "metadata", {}),
    }
    if not with_usage:
        del obj["usage"]
    return obj


def _event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, **dict(sorted(fields.items()))}


@dataclass
class Generation:
    """The output items of one reply and the stream events that build them."""

    output: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # without the lifecycle events
    obfuscate: bool = True

    def emit(self, type_: str, **fields: Any) -> None:
        self.events.append(_event(type_, **fields))

    def delta(self, type_: str, delta: str, **fields: Any) -> None:
        if self.obfuscate:
            fields["obfuscation"] = _obfuscation(delta)
        self.emit(type_, delta=delta, **fields)

    def reasoning(self, pieces: list[str], encrypted: bool) -> None:
        index = len(self.output)
        item: dict[str, Any] = {"id": hex_id("rs_"), "type": "reasoning", "content": []}
        if encrypted:
            item["encrypted_content"] = "gAAAAA" + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode()
        item["summary"] = []
        self.emit("response.output_item.added", item=dict(item), output_index=index)
        if pieces:
            text = "".join(pieces)
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            self.emit(
                "response.reasoning_summary_part.added", part={"type": "summary_text", "text": ""}, **where
            )
            for piece in pieces:
                self.delta("response.reasoning_summary_text.delta", piece, **where)
            self.emit("response.reasoning_summary_text.done", text=text, **where)
            part = {"type": "summary_text", "text": text}
            self.emit("response.reasoning_summary_part.done", part=part, **where)
            item["summary"] = [dict(part)]
        self.output.append(item)
        self.emit("response.output_item.done", item=item, output_index=index)

    def message(self, pieces: list[str], complete: bool) -> None:
        index = len(self.output)
        item_id = hex_id("msg_")
        added = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        self.emit("response.output_item.added", item=added, output_index=index)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        self.emit("response.content_part.added", part=part, **where)
        for piece in pieces:
            self.delta("response.output_text.delta", piece, logprobs=[], **where)
        text = "".join(pieces)
        self.emit("response.output_text.done", text=text, logprobs=[], **where)
        self.emit("response.content_part.done", part={**part, "text": text}, **where)
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed" if complete else "incomplete",
            "content": [{**part, "text": text}],
            "role": "assistant",
        }
        self.output.append(item)
        self.emit("response.output_item.done", item=item, output_index=index)

    def function_call(self, name: str, pieces: list[str], complete: bool) -> None:
        index = len(self.output)
        item_id, call = hex_id("fc_"), call_id()

        def item(status: str, arguments: str) -> dict[str, Any]:
            return {
                "id": item_id,
                "type": "function_call",
                "status": status,
                "arguments": arguments,
                "call_id": call,
                "name": name,
            }

        self.emit("response.output_item.added", item=item("in_progress", ""), output_index=index)
        for piece in pieces:
            self.delta("response.function_call_arguments.delta", piece, item_id=item_id, output_index=index)
        arguments = "".join(pieces)
        self.emit(
            "response.function_call_arguments.done", arguments=arguments, item_id=item_id, output_index=index
        )
        done = item("completed" if complete else "incomplete", arguments)
        self.output.append(done)
        self.emit("response.output_item.done", item=done, output_index=index)


def generate(reply: Reply, *, reasoning_item: bool, encrypted: bool, obfuscate: bool) -> Generation:
    """The output of `reply`: a reasoning item (when the model reasons), then a message or the
    function calls. A reply cut while reasoning has no message; the last item of a cut reply
    is `incomplete`."""
    gen = Generation(obfuscate=obfuscate)
    if reasoning_item or reply.reasoning:
        gen.reasoning(reply.reasoning, encrypted)
    if reply.calls:
        for i, call in enumerate(reply.calls):
            gen.function_call(call.name, call.pieces, complete=not (reply.cut and i == len(reply.calls) - 1))
    elif reply.content or not reply.cut:
        gen.message(reply.content, complete=not reply.cut)
    return gen


def lifecycle(type_: str, response: dict[str, Any]) -> dict[str, Any]:
    return _event(type_, response=response)


def number(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give the events their `sequence_number` (0, 1, ...), keeping the fields' order."""
    numbered = []
    for i, event in enumerate(events):
        fields = {k: v for k, v in event.items() if k != "type"}
        fields["sequence_number"] = i
        numbered.append(_event(event["type"], **fields))
    return numbered


def input_item(item: Any) -> dict[str, Any]:
    """An input item as `GET /v1/responses/{id}/input_items` lists it (with an id)."""
    if isinstance(item, str):
        item = {"role": "user", "content": item}
    if not isinstance(item, dict):
        return {"id": hex_id("msg_"), "type": "message", "role": "user", "content": [], "status": "completed"}
    kind = item.get("type")
    if kind in (None, "message"):
        role = item.get("role") if isinstance(item.get("role"), str) else "user"
        content = item.get("content")
        if isinstance(content, str):
            part = "output_text" if role == "assistant" else "input_text"
            content = [{"type": part, "text": content}]
        listed = {"id": item.get("id") or hex_id("msg_"), "type": "message", "role": role}
        listed["content"] = content if isinstance(content, list) else []
        listed["status"] = item.get("status") or "completed"
        return listed
    if kind == "function_call":
        return {
            "id": item.get("id") or hex_id("fc_"),
            "type": "function_call",
            "status": item.get("status") or "completed",
            "arguments": item.get("arguments"),
            "call_id": item.get("call_id"),
            "name": item.get("name"),
        }
    if kind == "function_call_output":
        return {
            "id": item.get("id") or hex_id("fco_"),
            "type": "function_call_output",
            "call_id": item.get("call_id"),
            "output": item.get("output"),
            "status": item.get("status") or "completed",
        }
    return {"id": item.get("id") or hex_id("item_"), **item}

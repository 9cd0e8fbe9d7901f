"""The Responses API on chat-only backends: a Responses request becomes a chat completion, and
the answer — JSON or streamed — becomes a Responses answer again.

Covered: `instructions`; input as a string or items (messages with text, image and file parts,
function calls and their outputs; reasoning items are dropped, a chat backend cannot take them);
function tools and `tool_choice`; `text.format` (JSON schema, JSON object); `reasoning.effort`;
`max_output_tokens`; sampling parameters; usage (cached input, reasoning tokens). Not possible on
a chat backend, so a clear 400: hosted tools (`web_search`, `file_search`, …), `previous_response_id`
and item references (nothing is stored), background mode.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from aikeys import limits
from aikeys.usage import reported_usage
from aikeys_gateway import errors
from aikeys_gateway.upstreams.openai import ChatReader
from aikeys_gateway.upstreams.sse import DONE, Delegating

_SAMPLING = ("temperature", "top_p", "parallel_tool_calls", "user", "seed", "top_logprobs", "service_tier")
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _unsupported(message: str, param: str) -> errors.GatewayError:
    return errors.invalid_request(message, param=param, code="unsupported_on_chat_backend")


# The request is validated before it gets here (`schemas`), yet nothing below trusts a field's
# type: whatever JSON it meets, translating raises a 400 or nothing.


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _shown(value: Any) -> str:
    """A client's value as an error message may echo it."""
    return limits.truncate(repr(value))


# --- the request ------------------------------------------------------------------------------------


def _part(part: Any) -> dict[str, Any] | None:
    """A Responses content part as a chat content part."""
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": _str(part.get("text"))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _unsupported("Images by file_id need OpenAI's file store; send an image_url.", "input")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "filename", "file_id") if isinstance(part.get(k), str)}
        return {"type": "file", "file": file}
    if kind == "refusal":
        return {"type": "text", "text": _str(part.get("refusal"))}
    return None


def _content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if content is not None and not isinstance(content, list):
        raise errors.invalid_request("Content must be a string or an array of content parts.", param="input")
    parts = [p for p in (_part(x) for x in content or []) if p is not None]
    if all(p["type"] == "text" for p in parts):  # plain text: the widest-understood form
        return "".join(p["text"] for p in parts)
    return parts


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise errors.invalid_request("'input' must be a string or an array of items.", param="input")
    for item in items:
        if not isinstance(item, dict):
            raise errors.invalid_request("Every input item must be an object.", param="input")
        _item(item, messages)
    return messages


def _item(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """Append one Responses input item to the chat messages."""
    kind = item.get("type", "message")
    if kind == "message":
        role = _ROLES.get(_str(item.get("role")))
        if role is None:
            raise errors.invalid_request(f"Unknown message role {_shown(item.get('role'))}.", param="input")
        messages.append({"role": role, "content": _content(item.get("content"))})
    elif kind == "function_call":
        name = _str(item.get("name"))
        if _str(item.get("namespace")):
            name = f"{item['namespace']}{NAMESPACE_SEPARATOR}{name}"
        call = {
            "id": item.get("call_id") or item.get("id"),
            "type": "function",
            "function": {"name": name, "arguments": _str(item.get("arguments"))},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)  # parallel calls: one assistant message
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _content(output)
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
    elif kind != "reasoning":  # a chat backend cannot take reasoning items back: they are dropped
        raise _unsupported(
            f"Input items of type {_shown(kind)} need the Responses API; this model is served through chat "
            "completions.",
            "input",
        )


NAMESPACE_SEPARATOR = "__"  # a namespace's tool `close` in `agents` is the chat function `agents__close`


def _function(tool: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    if namespace:
        function["name"] = f"{namespace}{NAMESPACE_SEPARATOR}{tool.get('name')}"
    return {"type": "function", "function": function}


def namespaced(request: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Chat function names that stand for a namespace's tools → (namespace, tool name)."""
    found = {}
    for tool in _list(request.get("tools")):
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            for inner in _list(tool.get("tools")):
                if isinstance(inner, dict):
                    found[f"{tool.get('name')}{NAMESPACE_SEPARATOR}{inner.get('name')}"] = (
                        str(tool.get("name")),
                        str(inner.get("name")),
                    )
    return found


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    given = body.get("tools")
    if given is not None and not isinstance(given, list):
        raise errors.invalid_request("'tools' must be an array of tools.", param="tools")
    for tool in _list(given):
        if isinstance(tool, dict) and tool.get("type") == "namespace":  # a group of function tools
            found = tool.get("tools")
            if found is not None and not isinstance(found, list):
                raise errors.invalid_request("A namespace's 'tools' must be an array.", param="tools")
            inner = [t for t in _list(found) if isinstance(t, dict)]
            if any(t.get("type", "function") != "function" for t in inner):
                raise _unsupported(
                    f"Namespace {_shown(tool.get('name'))} holds tools other than functions.", "tools"
                )
            tools += [_function(t, str(tool.get("name"))) for t in inner]
            continue
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _unsupported(
                f"The hosted tool {_shown(kind)} needs the Responses API of OpenAI itself; this model is "
                "served through chat completions, which only take function tools.",
                "tools",
            )
        tools.append(_function(tool))
    return tools


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, dict):
        raise _unsupported(
            f"tool_choice {_shown(choice.get('type'))} needs the Responses API.", "tool_choice"
        )
    return choice


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise errors.invalid_request(f"Unknown text.format type {_shown(fmt.get('type'))}.", param="text.format")


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request that answers a Responses request (raises 400 for what a chat
    backend cannot do)."""
    if body.get("previous_response_id"):
        raise _unsupported(
            "previous_response_id needs a stored response, and this model is served through chat "
            "completions, which store nothing: send the whole conversation in 'input'.",
            "previous_response_id",
        )
    if body.get("background"):
        raise _unsupported("Background responses are not available for this model.", "background")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body)}
    tools = _tools(body)
    if tools:
        chat["tools"] = tools
        if "tool_choice" in body:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    effort = _dict(body.get("reasoning")).get("effort")
    if isinstance(effort, str):
        chat["reasoning_effort"] = effort
    for name in _SAMPLING:
        if name in body:
            chat[name] = body[name]
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("stream"):
        chat["stream"] = True
    return chat


# --- the answer -------------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _usage(usage: Any) -> dict[str, Any] | None:
    found = reported_usage(usage)
    if found is None:
        return None
    details = usage.get("prompt_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or {}

    def count(where: Any, name: str) -> int:
        value = where.get(name) if isinstance(where, dict) else 0
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return {  # as the Responses API counts: cache reads inside input_tokens
        "input_tokens": found.all_input,
        "input_tokens_details": {
            "cached_tokens": found.cached_tokens,
            "cache_write_tokens": count(details, "cache_write_tokens"),
        },
        "output_tokens": found.output_tokens,
        "output_tokens_details": {"reasoning_tokens": count(out_details, "reasoning_tokens")},
        "total_tokens": found.all_input + found.output_tokens,
    }


class Envelope:
    """The fields of a Responses `response` object that echo the request."""

    def __init__(self, request: dict[str, Any], model: str):
        self.id = _new_id("resp_")
        self.created_at = int(time.time())
        self.model = model
        self.request = request

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": r.get("instructions"),
            "max_output_tokens": r.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": _dict(r.get("reasoning")).get("effort"), "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": r.get("temperature", 1.0),
            "text": r.get("text") or {"format": {"type": "text"}},
            "tool_choice": r.get("tool_choice", "auto"),
            "tools": r.get("tools") or [],
            "top_logprobs": 0,
            "top_p": r.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": r.get("user"),
            "metadata": r.get("metadata") or {},
        }


def _message_item(text: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id or _new_id("msg_"),
        "type": "message",
        "status": status,
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
        "role": "assistant",
    }


def _call_item(
    call_id: str,
    name: str,
    arguments: str,
    status: str = "completed",
    names: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    item = {
        "id": _new_id("fc_"),
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }
    if names and name in names:  # a namespace's tool: answered under its own name, in its namespace
        item["namespace"], item["name"] = names[name]
    return item


def _reasoning_item(text: str) -> dict[str, Any]:
    return {
        "id": _new_id("rs_"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def response_from_chat(completion: Any, request: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion as the Responses API answers."""
    envelope = Envelope(request, model)
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(_reasoning_item(reasoning))
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(_message_item(message["content"]))
    names = namespaced(request)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):  # an upstream's malformed entry: nothing a client could call
            continue
        found_fn = call.get("function")
        function: dict[str, Any] = found_fn if isinstance(found_fn, dict) else {}
        name, arguments = function.get("name"), function.get("arguments")
        given = call.get("id")
        call_id = given if isinstance(given, str) and given else _new_id("call_")
        output.append(
            _call_item(
                call_id,
                name if isinstance(name, str) else "",
                arguments if isinstance(arguments, str) else "",
                names=names,
            )
        )
    cut = choice.get("finish_reason") == "length"
    usage = _usage(completion.get("usage")) if isinstance(completion, dict) else None
    return envelope.response(
        "incomplete" if cut else "completed", output, usage, "max_output_tokens" if cut else None
    )


class ChatToResponses(Delegating):
    """A stream reader that meters a chat stream (as `ChatReader`) and forwards it as the
    Responses API's events: created, in_progress, then per output item added → deltas → done,
    and completed (or incomplete) with the whole response and its usage."""

    def __init__(self, request: dict[str, Any], model: str):
        self.chat = ChatReader(client_wants_usage=True)
        super().__init__(self.chat)  # usage, output and the end: the chat stream's
        self.envelope = Envelope(request, model)
        self.sequence = 0
        self.started = False
        self.closed = False
        self.items: list[dict[str, Any]] = []  # output items, in order
        self.open: dict[str, int] = {}  # "reasoning" / "message" / "call:<index>" → output index
        self.texts: dict[int, list[str]] = {}
        self.cut = False
        self.raw_usage: Any = None  # the chat usage object, for the response's usage details
        self.names = namespaced(request)

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        response = self.envelope.response("in_progress", [], None)
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _open(self, key: str, item: dict[str, Any]) -> tuple[int, list[bytes]]:
        if key in self.open:
            return self.open[key], []
        index = len(self.items)
        self.items.append(item)
        self.open[key] = index
        self.texts[index] = []
        out = [self._event("response.output_item.added", output_index=index, item=item)]
        if item["type"] == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        return index, out

    def read(self, raw: bytes, data: Any) -> bytes:
        self.chat.read(raw, data)
        out = self._start()
        if data is DONE:
            out += self._finish()
            return b"".join(out)
        if not isinstance(data, dict):
            return b"".join(out)
        if isinstance(data.get("usage"), dict):
            self.raw_usage = data["usage"]
        for choice in _list(data.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _dict(choice.get("delta"))
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                index, opened = self._open(
                    "reasoning", {"id": _new_id("rs_"), "type": "reasoning", "summary": []}
                )
                out += opened
                self.texts[index].append(reasoning)
                out.append(
                    self._event(
                        "response.reasoning_text.delta",
                        item_id=self.items[index]["id"],
                        output_index=index,
                        content_index=0,
                        delta=reasoning,
                    )
                )
            content = delta.get("content")
            if isinstance(content, str) and content:
                index, opened = self._open("message", _message_item("", "in_progress") | {"content": []})
                out += opened
                self.texts[index].append(content)
                out.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.items[index]["id"],
                        output_index=index,
                        content_index=0,
                        delta=content,
                        logprobs=[],
                    )
                )
            for call in _list(delta.get("tool_calls")):
                if not isinstance(call, dict):
                    continue
                function = _dict(call.get("function"))
                key = f"call:{call.get('index', 0)}"
                if key not in self.open:
                    call_id = _str(call.get("id")) or _new_id("call_")
                    item = _call_item(call_id, _str(function.get("name")), "", "in_progress", self.names)
                    index, opened = self._open(key, item)
                    out += opened
                index = self.open[key]
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    self.texts[index].append(arguments)
                    out.append(
                        self._event(
                            "response.function_call_arguments.delta",
                            item_id=self.items[index]["id"],
                            output_index=index,
                            delta=arguments,
                        )
                    )
            if choice.get("finish_reason") == "length":
                self.cut = True
        return b"".join(out)

    def close(self) -> bytes:
        return b"".join(self._start() + self._finish())

    def _finish(self) -> list[bytes]:
        if self.closed:
            return []
        self.closed = True
        out: list[bytes] = []
        for index, item in enumerate(self.items):
            text = "".join(self.texts[index])
            if item["type"] == "message":
                out.append(
                    self._event(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
                part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
                out.append(
                    self._event(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=part,
                    )
                )
                item.update(_message_item(text, item_id=item["id"]))
            elif item["type"] == "function_call":
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=text,
                    )
                )
                item.update(arguments=text, status="completed")
            else:
                out.append(
                    self._event(
                        "response.reasoning_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=text,
                    )
                )
                item["content"] = [{"type": "reasoning_text", "text": text}]
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        usage = _usage(self.raw_usage)
        if self.cut:
            response = self.envelope.response("incomplete", self.items, usage, "max_output_tokens")
            out.append(self._event("response.incomplete", response=response))
        else:
            out.append(
                self._event(
                    "response.completed", response=self.envelope.response("completed", self.items, usage)
                )
            )
        return out

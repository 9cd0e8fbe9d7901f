"""What the mock model answers, decided deterministically from the request.

Both APIs (chat completions and responses) are read into an `Ask`, and `plan` turns it into
a `Reply`. The rules, first match wins:

1. `reply_kind="tool_call"` (switch): a call to `get_weather` whose arguments are
   `reply_tokens` one-token pieces (`tokens.tool_argument_pieces`).
2. The conversation ends with tool results (chat `role:"tool"` messages, responses
   `function_call_output` items): the text `The tool returned: <outputs joined by "; ">`
   (or, with a JSON response format, the format's instance).
3. Function tools are offered, `tool_choice` is not "none", and `tool_choice` forces a
   function, is "required", or the last user text has the word "tool(s)" or "weather": calls
   to the forced function, or to the first offered one, or, when that text also has the
   word "parallel" and `parallel_tool_calls` is not false, to each of the first two. The
   arguments are `schema.instance(parameters)` as compact JSON.
4. A JSON response format (chat `response_format`, responses `text.format`): `json_schema`
   answers `schema.instance(schema)`, `json_object` answers `{"answer":"<reply words>"}`.
5. Otherwise `reply_tokens` words of `tokens.REPLY_WORDS`.

Reasoning comes first: hidden reasoning tokens (`tokens.EFFORT_TOKENS` of the requested
effort, counted but never shown) and, with `reply_kind="reasoning"`, `reply_tokens` shown
reasoning words (chat `reasoning_content`; in responses the reasoning summary, which also
shows the hidden tokens' words when a summary is asked for). The output cap (max_tokens,
max_completion_tokens, max_output_tokens) takes hidden reasoning, shown reasoning, then the
answer, unless `ignore_max_tokens`. Every piece is one token of `tokens.count_text`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aikeys_dev.mockupstream import schema, tokens

TRIGGER = re.compile(r"\b(?:tools?|weather)\b", re.IGNORECASE)
PARALLEL = re.compile(r"\bparallel\b", re.IGNORECASE)
TOOL_ANSWER = "The tool returned: "


@dataclass
class Function:
    name: str
    parameters: Any


@dataclass
class Ask:
    """What a request asks of the model, in either API's terms."""

    text: str = ""  # the last user message's text
    results: list[str] | None = None  # tool outputs the conversation ends with
    functions: list[Function] = field(default_factory=list)
    choice: str = "auto"  # tool_choice: "auto", "none", "required" or "function" (forced)
    forced: str | None = None  # the forced function's name
    parallel: bool = True
    format: str = "text"  # "text", "json_object" or "json_schema"
    schema: Any = None
    effort: str | None = None  # reasoning effort when a reasoning model is asked to reason
    show_reasoning: bool = False  # responses: a reasoning summary was asked for
    limit: Any = None  # the output cap as sent


@dataclass
class Call:
    name: str
    pieces: list[str]

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


@dataclass
class Reply:
    """One generated answer (every choice of a chat request gets the same one)."""

    kind: str  # the reply_kind switch it was generated under
    hidden: int  # reasoning tokens generated but not shown
    reasoning: list[str]  # shown reasoning: one-token pieces
    content: list[str]  # the answer's text: one-token pieces
    calls: list[Call]
    cut: bool  # the output cap cut it short

    @property
    def reasoning_tokens(self) -> int:
        return self.hidden + len(self.reasoning)

    @property
    def generated(self) -> int:
        return self.reasoning_tokens + len(self.content) + sum(len(c.pieces) for c in self.calls)

    @property
    def finish_reason(self) -> str:
        """Chat's finish_reason."""
        if self.cut:
            return "length"
        return "tool_calls" if self.calls else "stop"

    @property
    def text(self) -> str:
        return "".join(self.content)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _arguments(parameters: Any) -> str:
    value = schema.instance(parameters) if isinstance(parameters, dict) else {}
    return compact(value if isinstance(value, dict) else {})


def _structured(ask: Ask, natural: int) -> list[str]:
    if ask.format == "json_schema":
        return tokens.split_pieces(compact(schema.instance(ask.schema)))
    return tokens.split_pieces(compact({"answer": "".join(tokens.reply_words(max(natural, 1)))}))


def _calls(ask: Ask) -> list[Function]:
    if not ask.functions or ask.choice == "none":
        return []
    if ask.forced is not None:
        return [f for f in ask.functions if f.name == ask.forced][:1]
    if ask.choice == "required" or TRIGGER.search(ask.text):
        two = PARALLEL.search(ask.text) and ask.parallel and len(ask.functions) > 1
        return ask.functions[: 2 if two else 1]
    return []


def plan(ask: Ask, kind: str, reply_tokens: int, ignore_cap: bool) -> Reply:
    natural = max(reply_tokens, 0)
    hidden = tokens.EFFORT_TOKENS.get(ask.effort, tokens.EFFORT_TOKENS["medium"]) if ask.effort else 0
    shown = natural if kind == "reasoning" else 0
    if ask.show_reasoning:
        hidden, shown = 0, hidden + shown
    content: list[str] = []
    calls: list[Call] = []
    if kind == "tool_call":
        calls = [Call(tokens.TOOL_NAME, tokens.tool_argument_pieces(natural))]
    elif ask.results is not None:
        if ask.format != "text":
            content = _structured(ask, natural)
        else:
            content = tokens.split_pieces(TOOL_ANSWER + "; ".join(ask.results))
    elif wanted := _calls(ask):
        calls = [Call(f.name, tokens.split_pieces(_arguments(f.parameters))) for f in wanted]
    elif ask.format != "text":
        content = _structured(ask, natural)
    else:
        content = tokens.reply_words(natural)
    limit = ask.limit
    total = hidden + shown + len(content) + sum(len(c.pieces) for c in calls)
    cut = not ignore_cap and isinstance(limit, int) and 0 < limit < total
    if cut:
        assert isinstance(limit, int)
        left = limit
        hidden = min(hidden, left)
        left -= hidden
        shown = min(shown, left)
        left -= shown
        content = content[:left]
        left -= len(content)
        kept: list[Call] = []
        for call in calls:
            if left <= 0:
                break
            kept.append(Call(call.name, call.pieces[:left]))
            left -= len(kept[-1].pieces)
        calls = kept
    return Reply(kind, hidden, tokens.reasoning_words(shown), content, calls, cut)


# --- reading requests ---------------------------------------------------------------------------


def _word(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _format(ask: Ask, fmt: Any, schema_of: Any) -> None:
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            ask.format = "json_object"
        elif fmt.get("type") == "json_schema":
            ask.format = "json_schema"
            ask.schema = schema_of(fmt)


def _choice(ask: Ask, choice: Any, forced_name: Any) -> None:
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        ask.choice = choice
    elif isinstance(choice, dict):
        if choice.get("type") == "function" and isinstance(name := forced_name(choice), str):
            ask.choice, ask.forced = "function", name
        elif choice.get("type") != "allowed_tools":
            ask.choice = "none"  # a hosted tool is forced: the mock calls no function


def from_chat(body: dict[str, Any]) -> Ask:
    given = body.get("messages")
    messages = [m for m in given if isinstance(m, dict)] if isinstance(given, list) else []
    ask = Ask(limit=body.get("max_completion_tokens") or body.get("max_tokens"))
    trailing = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.append(tokens.content_text(message.get("content")))
    if trailing:
        ask.results = trailing[::-1]
    for message in reversed(messages):
        if message.get("role") == "user":
            ask.text = tokens.content_text(message.get("content"))
            break
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            ask.functions.append(Function(fn["name"], fn.get("parameters")))
    _choice(
        ask,
        body.get("tool_choice"),
        lambda c: (c.get("function") or {}).get("name") if isinstance(c.get("function"), dict) else None,
    )
    ask.parallel = body.get("parallel_tool_calls") is not False
    _format(
        ask,
        body.get("response_format"),
        lambda f: (
            (f.get("json_schema") or {}).get("schema") if isinstance(f.get("json_schema"), dict) else None
        ),
    )
    ask.effort = _word(body.get("reasoning_effort"))
    return ask


def _is_user_message(item: Any) -> bool:
    return isinstance(item, str) or (
        isinstance(item, dict) and item.get("type") in (None, "message") and item.get("role") == "user"
    )


def from_responses(body: dict[str, Any], context: list[Any]) -> Ask:
    """`context`: the input items of the whole conversation (earlier turns, then this input)."""
    ask = Ask(limit=body.get("max_output_tokens"))
    trailing = []
    for item in reversed(context):
        if not (isinstance(item, dict) and item.get("type") == "function_call_output"):
            break
        trailing.append(tokens.content_text(item.get("output")))
    if trailing:
        ask.results = trailing[::-1]
    for item in reversed(context):
        if _is_user_message(item):
            ask.text = item if isinstance(item, str) else tokens.content_text(item.get("content"))
            break
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str):
            ask.functions.append(Function(tool["name"], tool.get("parameters")))
    _choice(ask, body.get("tool_choice"), lambda c: c.get("name"))
    ask.parallel = body.get("parallel_tool_calls") is not False
    text = body.get("text")
    if isinstance(text, dict):
        _format(ask, text.get("format"), lambda f: f.get("schema"))
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        ask.effort = _word(reasoning.get("effort")) or "medium"
        summary = reasoning.get("summary") or reasoning.get("generate_summary")
        ask.show_reasoning = isinstance(summary, str) and ask.effort != "none"
    return ask

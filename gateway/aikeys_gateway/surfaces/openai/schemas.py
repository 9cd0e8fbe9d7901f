"""The request bodies' types, declared once, and the one validator that walks them.

Each surface (chat/completions, completions, embeddings, responses) is an `Obj` of its top-level
fields; the shapes the gateway reads, estimates or translates — messages and their content parts,
tools of every kind (function, custom, namespace), tool_choice, response_format, text.format,
reasoning, input items, stream_options — are declared down to the fields it touches, as the
OpenAI API reference and the openai SDK's `*_create_params` type them. What is checked is a
field's type (and the few bounds the ledger depends on), never its value otherwise: unknown
fields, unknown tool or item types and unknown content parts pass through (OpenAI adds them
often; other backends have their own), and `null` stands for an absent field.

A bad field is a 400 `invalid_request_error` naming it the way OpenAI does
(`messages[0].content[1].text`). The walk costs nothing per field on the happy path beyond an
`isinstance`: the path of a bad field is assembled while the error travels out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aikeys import limits
from aikeys.estimate import Endpoint
from aikeys_gateway import errors


class Invalid(Exception):
    """A value of the wrong type or out of bounds; `path` is filled in on the way out."""

    def __init__(self, expected: str, value: Any, code: str = "invalid_type", bound: str = ""):
        super().__init__(expected)
        self.expected, self.value, self.code, self.bound = expected, value, code, bound
        self.path: list[str | int] = []

    def param(self) -> str:
        out = ""
        for step in reversed(self.path):
            out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
        return out

    def error(self) -> errors.GatewayError:
        param = self.param()
        if self.code == "invalid_type":
            got = json_type(self.value)
            message = f"Invalid type for '{param}': expected {self.expected}, but got {got} instead."
        else:
            message = (
                f"Invalid '{param}': {self.expected}. Expected a value {self.bound}, "
                f"but got {self.value} instead."
            )
        return errors.invalid_request(message, param=param or None, code=self.code)


_TYPES = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
)


def json_type(value: Any) -> str:
    """A JSON value's type as OpenAI's errors name it."""
    if value is None:
        return "null"
    return next((name for kind, name in _TYPES if isinstance(value, kind)), "an object")


_JSON: frozenset[type] = frozenset((dict, list, str, int, float, bool, type(None)))


class Shape:
    """A JSON type. `kinds`: the Python types a value of it can be (a union picks by them);
    `plain`: the exact types of values that are of it without a look inside (the fast path)."""

    kinds: tuple[type, ...] = (object,)
    plain: frozenset[type] = _JSON
    expected = "any value"

    def check(self, value: Any) -> None:
        """Anything goes (subclasses check)."""

    def __or__(self, other: Shape) -> Shape:
        return OneOf(self, other)


class Scalar(Shape):
    """A string, boolean or number: its exact JSON types (a boolean is no number)."""

    def __init__(self, kinds: tuple[type, ...], expected: str):
        self.kinds, self.plain, self.expected = kinds, frozenset(kinds), expected

    def check(self, value: Any) -> None:
        if type(value) not in self.plain:
            raise Invalid(self.expected, value)


class Int(Shape):
    """An integer (a boolean is not one), optionally bounded."""

    kinds = (int,)
    expected = "an integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum
        self.plain = frozenset((int,)) if minimum is None and maximum is None else frozenset()

    def check(self, value: Any) -> None:
        if type(value) is not int:
            raise Invalid(self.expected, value)
        if self.minimum is not None and value < self.minimum:
            raise Invalid(
                "integer below minimum value", value, "integer_below_min_value", f">= {self.minimum}"
            )
        if self.maximum is not None and value > self.maximum:
            raise Invalid(
                "integer above maximum value", value, "integer_above_max_value", f"<= {self.maximum}"
            )


class Obj(Shape):
    """An object; its known fields are checked (null: absent), the others pass."""

    kinds = (dict,)
    expected = "an object"

    def __init__(self, **fields: Shape):
        self.fields: Mapping[str, Shape] = fields
        self.plain = frozenset() if fields else frozenset((dict,))

    def check(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise Invalid(self.expected, value)
        fields = self.fields
        for name, item in value.items():
            shape = fields.get(name)
            if shape is None or item is None or type(item) in shape.plain:
                continue
            try:
                shape.check(item)
            except Invalid as err:
                err.path.append(name)
                raise


class Arr(Shape):
    kinds = (list,)

    def __init__(self, item: Shape):
        self.item = item
        self.expected = f"an array of {_plural(item.expected)}"
        self.plain = frozenset((list,)) if item.plain == _JSON else frozenset()

    def check(self, value: Any) -> None:
        if not isinstance(value, list):
            raise Invalid(self.expected, value)
        check, plain = self.item.check, self.item.plain
        for i, item in enumerate(value):
            if type(item) in plain:
                continue
            try:
                check(item)
            except Invalid as err:
                err.path.append(i)
                raise


class Tagged(Obj):
    """An object whose `type` field picks its shape (`default`: the type when it has none); an
    unknown type is any object."""

    def __init__(self, cases: Mapping[str, Obj], default: str | None = None):
        super().__init__()
        self.cases, self.default, self.plain = cases, default, frozenset()

    def check(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise Invalid(self.expected, value)
        kind = value.get("type", self.default)
        if kind is None:
            return
        if not isinstance(kind, str):
            err = Invalid("a string", kind)
            err.path.append("type")
            raise err
        shape = self.cases.get(kind)
        if shape is not None:
            shape.check(value)


class OneOf(Shape):
    """One of several shapes; a value that only one of them can be is checked as that one (its
    error names the deepest field), else the first that accepts it wins."""

    def __init__(self, *options: Shape):
        self.options: tuple[Shape, ...] = tuple(
            s for o in options for s in (o.options if isinstance(o, OneOf) else (o,))
        )
        self.kinds = tuple(k for o in options for k in o.kinds)
        self.plain = frozenset(t for o in self.options for t in o.plain)
        names = [o.expected for o in self.options]
        self.expected = "one of " + ", ".join(names[:-1]) + f" or {names[-1]}"

    def check(self, value: Any) -> None:
        fitting = [o for o in self.options if isinstance(value, o.kinds)]
        if len(fitting) == 1:
            fitting[0].check(value)
            return
        for option in fitting:
            try:
                option.check(value)
                return
            except Invalid:
                continue
        raise Invalid(self.expected, value)


def _plural(expected: str) -> str:
    """ "an array of integers" → "arrays of integers"."""
    article, _, rest = expected.partition(" ")
    if article not in ("a", "an"):
        return "values"
    word, _, tail = rest.partition(" ")
    return f"{word}s {tail}".rstrip()


ANY = Shape()
STRING = Scalar((str,), "a string")
BOOLEAN = Scalar((bool,), "a boolean")
NUMBER = Scalar((int, float), "a number")
OBJECT = Obj()
ARRAY = Arr(ANY)
INTEGER = Int()
POSITIVE = Int(minimum=1)
CHOICES = Int(minimum=1, maximum=limits.MAX_CHOICES)
TEXT_OR_STRINGS = STRING | Arr(STRING)
TOKENS = STRING | Arr(STRING) | Arr(INTEGER) | Arr(Arr(INTEGER))  # a prompt or embeddings input

# --- chat completions -------------------------------------------------------------------------------

PROMPT_CACHE = Obj(mode=STRING, ttl=STRING)
CHAT_PART = Tagged(
    {
        "text": Obj(text=STRING, prompt_cache_breakpoint=PROMPT_CACHE),
        "image_url": Obj(image_url=Obj(url=STRING, detail=STRING), prompt_cache_breakpoint=PROMPT_CACHE),
        "input_audio": Obj(input_audio=Obj(data=STRING, format=STRING)),
        "file": Obj(file=Obj(file_data=STRING, file_id=STRING, filename=STRING)),
        "refusal": Obj(refusal=STRING),
    }
)
FUNCTION_CALL = Obj(name=STRING, arguments=STRING)
CHAT_TOOL_CALL = Tagged(
    {
        "function": Obj(id=STRING, function=FUNCTION_CALL),
        "custom": Obj(id=STRING, custom=Obj(name=STRING, input=STRING)),
    }
)
MESSAGE = Obj(
    role=STRING,
    content=STRING | Arr(CHAT_PART),
    name=STRING,
    tool_calls=Arr(CHAT_TOOL_CALL),
    tool_call_id=STRING,
    function_call=FUNCTION_CALL,
    refusal=STRING,
    audio=Obj(id=STRING),
)
FUNCTION = Obj(name=STRING, description=STRING, parameters=OBJECT, strict=BOOLEAN)
CHAT_TOOL = Tagged(
    {
        "function": Obj(function=FUNCTION),
        "custom": Obj(custom=Obj(name=STRING, description=STRING, format=OBJECT)),
    }
)
CHAT_TOOL_CHOICE = STRING | Tagged(
    {
        "function": Obj(function=Obj(name=STRING)),
        "custom": Obj(custom=Obj(name=STRING)),
        "allowed_tools": OBJECT,
    }
)
JSON_SCHEMA = Obj(name=STRING, description=STRING, schema=OBJECT, strict=BOOLEAN)
STREAM_OPTIONS = Obj(include_usage=BOOLEAN, include_obfuscation=BOOLEAN)
SAMPLING = {
    "temperature": NUMBER,
    "top_p": NUMBER,
    "frequency_penalty": NUMBER,
    "presence_penalty": NUMBER,
    "seed": INTEGER,
    "user": STRING,
    "logit_bias": OBJECT,
    "stop": TEXT_OR_STRINGS,
    "stream": BOOLEAN,
    "stream_options": STREAM_OPTIONS,
    "max_tokens": POSITIVE,
    "n": CHOICES,
}

CHAT = Obj(
    **SAMPLING,
    model=STRING,
    messages=Arr(MESSAGE),
    max_completion_tokens=POSITIVE,
    tools=Arr(CHAT_TOOL),
    tool_choice=CHAT_TOOL_CHOICE,
    parallel_tool_calls=BOOLEAN,
    functions=Arr(FUNCTION),
    function_call=STRING | Obj(name=STRING),
    response_format=Tagged({"json_schema": Obj(json_schema=JSON_SCHEMA)}),
    reasoning_effort=STRING,
    verbosity=STRING,
    logprobs=BOOLEAN,
    top_logprobs=INTEGER,
    modalities=Arr(STRING),
    audio=OBJECT,
    prediction=OBJECT,
    metadata=OBJECT,
    store=BOOLEAN,
    service_tier=STRING,
    prompt_cache_key=STRING,
    prompt_cache_retention=STRING,
    prompt_cache_options=OBJECT,
    safety_identifier=STRING,
    moderation=OBJECT,
    web_search_options=OBJECT,
)

# --- completions and embeddings ---------------------------------------------------------------------

COMPLETIONS = Obj(
    **SAMPLING,
    model=STRING,
    prompt=TOKENS,
    suffix=STRING,
    best_of=CHOICES,
    echo=BOOLEAN,
    logprobs=INTEGER,
)
EMBEDDINGS = Obj(model=STRING, input=TOKENS, dimensions=POSITIVE, encoding_format=STRING, user=STRING)

# --- responses --------------------------------------------------------------------------------------

INPUT_PART = Tagged(
    {
        "input_text": Obj(text=STRING, prompt_cache_breakpoint=PROMPT_CACHE),
        "output_text": Obj(text=STRING, annotations=ARRAY),
        "text": Obj(text=STRING),
        "input_image": Obj(
            image_url=STRING, file_id=STRING, detail=STRING, prompt_cache_breakpoint=PROMPT_CACHE
        ),
        "input_file": Obj(
            file_data=STRING,
            file_id=STRING,
            file_url=STRING,
            filename=STRING,
            prompt_cache_breakpoint=PROMPT_CACHE,
        ),
        "refusal": Obj(refusal=STRING),
    }
)
INPUT_CONTENT = STRING | Arr(INPUT_PART)
INPUT_ITEM = Tagged(
    {
        "message": Obj(role=STRING, content=INPUT_CONTENT, id=STRING, status=STRING),
        "function_call": Obj(id=STRING, call_id=STRING, name=STRING, namespace=STRING, arguments=STRING),
        "function_call_output": Obj(id=STRING, call_id=STRING, output=INPUT_CONTENT),
        "item_reference": Obj(id=STRING),
    },
    default="message",
)
RESPONSES_FUNCTION = Obj(name=STRING, description=STRING, parameters=OBJECT, strict=BOOLEAN)
RESPONSES_TOOL = Tagged(
    {
        "function": RESPONSES_FUNCTION,
        "custom": Obj(name=STRING, description=STRING, format=OBJECT),
        "namespace": Obj(
            name=STRING,
            description=STRING,
            tools=Arr(
                Tagged({"function": RESPONSES_FUNCTION, "custom": Obj(name=STRING)}, default="function")
            ),
        ),
    }
)
TEXT_FORMAT = Tagged({"json_schema": Obj(name=STRING, description=STRING, schema=OBJECT, strict=BOOLEAN)})

RESPONSES = Obj(
    model=STRING,
    input=STRING | Arr(INPUT_ITEM),
    instructions=STRING,
    max_output_tokens=POSITIVE,
    max_tool_calls=INTEGER,
    tools=Arr(RESPONSES_TOOL),
    tool_choice=STRING | Tagged({"function": Obj(name=STRING), "custom": Obj(name=STRING)}),
    parallel_tool_calls=BOOLEAN,
    text=Obj(format=TEXT_FORMAT, verbosity=STRING),
    reasoning=Obj(effort=STRING, summary=STRING, generate_summary=STRING),
    previous_response_id=STRING,
    conversation=STRING | OBJECT,
    background=BOOLEAN,
    store=BOOLEAN,
    stream=BOOLEAN,
    stream_options=STREAM_OPTIONS,
    include=Arr(STRING),
    metadata=OBJECT,
    prompt=OBJECT,
    temperature=NUMBER,
    top_p=NUMBER,
    top_logprobs=INTEGER,
    truncation=STRING,
    service_tier=STRING,
    user=STRING,
    prompt_cache_key=STRING,
    prompt_cache_retention=STRING,
    prompt_cache_options=OBJECT,
    safety_identifier=STRING,
    moderation=OBJECT,
    context_management=Arr(OBJECT),
    background_options=OBJECT,
    access_programs=OBJECT,
    image=OBJECT,
)

BODIES: Mapping[Endpoint, Obj] = {
    Endpoint.CHAT: CHAT,
    Endpoint.COMPLETIONS: COMPLETIONS,
    Endpoint.EMBEDDINGS: EMBEDDINGS,
    Endpoint.RESPONSES: RESPONSES,
}


def check(endpoint: Endpoint, body: dict[str, Any]) -> None:
    """Every known field of the body has its type (else a 400 naming the field)."""
    try:
        BODIES[endpoint].check(body)
    except Invalid as err:
        raise err.error() from None

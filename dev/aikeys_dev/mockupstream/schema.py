"""Deterministic instances of JSON schemas: tool-call arguments and structured outputs.

`instance(schema)` builds the same value for the same schema every time: an object has its
required properties (all its properties when it lists none, while not nested too deeply),
never others, so `additionalProperties: false` holds; a string is `WORD` (or fits its
`format`, `minLength`, `maxLength`), an integer 1, a number 1.5 (both moved into
`minimum`/`maximum`), a boolean true, an array one item (or `minItems`), an enum its first
value, a `const` itself; `$ref` (to `#/...`), `anyOf`/`oneOf` (the first non-null choice),
`allOf` (merged) and type lists are followed. Nesting is cut at `MAX_DEPTH` (nullable values
become null there, objects `{}`, arrays `[]`), and sizes at `MAX_NODES`, `MAX_ITEMS` and
`MAX_LENGTH`, so recursive or hostile schemas terminate quickly. Anything that is not a
schema yields `WORD`.
"""

from __future__ import annotations

import math
from typing import Any

WORD = "mock"
MAX_DEPTH = 12
OPTIONAL_DEPTH = 4  # below this depth, an object without `required` gets no properties
MAX_NODES = 10_000  # values built per instance; past it every value is its shallowest form
MAX_ITEMS = 64  # the most items an array gets, whatever its minItems
MAX_LENGTH = 4096  # the longest string, whatever its minLength
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "P1D",
    "email": "mock@example.com",
    "idn-email": "mock@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def instance(schema: Any) -> Any:
    """A value valid against `schema` (see the module docstring for what is supported)."""
    return _Builder(schema).build(schema, 0)


class _Builder:
    def __init__(self, root: Any):
        self.root = root
        self.nodes = 0

    def resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):  # remote, or not a reference at all
            return True
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return True
        return node

    def build(self, schema: Any, depth: int) -> Any:
        self.nodes += 1
        if not isinstance(schema, dict) or depth > MAX_DEPTH or self.nodes > MAX_NODES:
            return _shallow(schema)
        target = self.redirect(schema, depth)
        if target is not None:
            return self.build(target, depth + 1)
        literal = _literal(schema)
        if literal:
            return literal[0]
        kind = _kind(schema, depth)
        if kind in ("object", "array"):
            return self.obj(schema, depth) if kind == "object" else self.array(schema, depth)
        return _scalar(schema, kind)

    def redirect(self, schema: dict[str, Any], depth: int) -> Any:
        """The schema that stands for `schema`: its `$ref` target, `anyOf`/`oneOf` choice or
        merged `allOf` (None when it stands for itself)."""
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.resolve(ref)
        for key in ("anyOf", "oneOf"):
            choices = schema.get(key)
            if isinstance(choices, list) and choices:
                return _choose(choices, depth)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.merge(schema, all_of)
        return None

    def merge(self, schema: dict[str, Any], parts: list[Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for given in parts:
            part = self.resolve(given["$ref"]) if isinstance(given, dict) and "$ref" in given else given
            if not isinstance(part, dict):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**(merged.get("properties") or {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*(merged.get("required") or []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def obj(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        if isinstance(required, list):
            names = [n for n in properties if n in required]
            names += [n for n in required if isinstance(n, str) and n not in properties and n not in names]
        elif depth < OPTIONAL_DEPTH:
            names = list(properties)
        else:
            names = []
        return {name: self.build(properties.get(name, True), depth + 1) for name in names}

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        count = min(max(_int(schema.get("minItems"), 1), 1), MAX_ITEMS)
        most = _int(schema.get("maxItems"), count)
        count = min(count, max(most, 0))
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", True)
        if depth >= MAX_DEPTH - 1 and not prefix:
            count = min(count, _int(schema.get("minItems"), 0))
        count = min(max(count, len(prefix)), MAX_ITEMS)
        return [self.build(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)]


def _choose(choices: list[Any], depth: int) -> Any:
    """The first non-null choice (null itself when nested deep and it is offered)."""
    non_null = [c for c in choices if not (isinstance(c, dict) and c.get("type") == "null")]
    if non_null and not (depth >= OPTIONAL_DEPTH and len(non_null) < len(choices)):
        return non_null[0]
    return {"type": "null"}


def _literal(schema: dict[str, Any]) -> list[Any]:
    """[the schema's const or first enum value], or [] when it has neither."""
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return [enum[0]] if isinstance(enum, list) and enum else []


def _kind(schema: dict[str, Any], depth: int) -> str:
    """The type to build: the first non-null one of a type list (null when nested deep),
    else inferred from `properties` / `items`, else "string"."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        if "null" in kinds and (depth >= OPTIONAL_DEPTH or len(kinds) == 1):
            return "null"
        kind = next((k for k in kinds if k != "null"), None)
    if kind is None:
        if isinstance(schema.get("properties"), dict):
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
    return kind if isinstance(kind, str) else "string"


def _scalar(schema: dict[str, Any], kind: str) -> Any:
    builders = {"integer": _integer, "number": _number, "boolean": lambda _: True, "null": lambda _: None}
    return builders.get(kind, _string)(schema)


def _shallow(schema: Any) -> Any:
    """Past MAX_DEPTH (or not a schema): the smallest value that fits without looking further down."""
    if not isinstance(schema, dict):
        return WORD
    kind = schema.get("type")
    kinds = set(kind if isinstance(kind, list) else [kind])
    if "properties" in schema:
        kinds.add("object")
    if "items" in schema:
        kinds.add("array")
    empties: dict[str, Any] = {"null": None, "object": {}, "array": []}
    for name, empty in empties.items():
        if name in kinds:
            return empty
    return _scalar(schema, next((k for k in ("integer", "number", "boolean") if k in kinds), "string"))


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return int(value)


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low exclusive, high exclusive) from minimum/maximum and their exclusive forms."""

    def num(key: str) -> float | None:
        value = schema.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

    low, high = num("minimum"), num("maximum")
    xlow, xhigh = num("exclusiveMinimum"), num("exclusiveMaximum")
    low_x = high_x = False
    if xlow is not None and (low is None or xlow >= low):
        low, low_x = xlow, True
    if xhigh is not None and (high is None or xhigh <= high):
        high, high_x = xhigh, True
    return low, high, low_x, high_x


def _integer(schema: dict[str, Any]) -> int:
    low, high, low_x, high_x = _bounds(schema)
    value = 1
    if low is not None and (value < low or (low_x and value <= low)):
        value = math.floor(low) + 1 if low_x else math.ceil(low)
    if high is not None and (value > high or (high_x and value >= high)):
        value = math.ceil(high) - 1 if high_x else math.floor(high)
    step = _int(schema.get("multipleOf"), 0)
    if step > 0 and value % step:
        value = step * math.ceil(value / step)
    return value


def _number(schema: dict[str, Any]) -> float:
    low, high, low_x, high_x = _bounds(schema)
    value = 1.5
    if low is not None and (value < low or (low_x and value <= low)):
        value = low + 0.5 if low_x else low
    if high is not None and (value > high or (high_x and value >= high)):
        value = (low + high) / 2 if low is not None else (high - 0.5 if high_x else high)
    return value


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, WORD) if isinstance(fmt, str) else WORD
    shortest = min(_int(schema.get("minLength"), 0), MAX_LENGTH)
    if len(text) < shortest:
        text = (text * (shortest // len(text) + 1))[:shortest]
    longest = _int(schema.get("maxLength"), -1)
    if longest >= 0:
        text = text[:longest]
    return text

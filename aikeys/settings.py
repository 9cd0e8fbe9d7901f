"""Reading settings from environment variables, with errors that name the variable.

    port = env_int(environ, "AIKEYS_USAGE_API_PORT", 0)

A value that does not parse raises `SettingsError("AIKEYS_USAGE_API_PORT='x': not an integer")`,
never a bare `ValueError` from deep inside a component's start-up (the way starlette's `Config`
reports it). Flags are strict: `ture` is an error, not false.

Each component's settings list the variables they read as `Variable`s (name, default, meaning):
its `--help` and docs/configuration.md are written from them, and a test checks that the list is
exactly what `from_env` reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """An environment variable with a value that does not parse; the message names it."""


@dataclass(frozen=True)
class Variable:
    """One environment variable a component reads, as its `--help` shows it."""

    name: str
    default: str  # as a person would write it; "" when unset means off or none
    meaning: str


def describe(title: str, variables: Iterable[Variable]) -> str:
    """A `--help` block (click keeps a block that starts with \\b as it is): one variable a line."""
    rows = list(variables)
    width = max(len(v.name) for v in rows)
    lines = [f"  {v.name.ljust(width)}  {v.meaning}" + (f" [{v.default}]" if v.default else "") for v in rows]
    return "\b\n" + title + ":\n" + "\n".join(lines)


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = _raw(environ, name)
    return default if value is None else value


def env_required(environ: Mapping[str, str], name: str, what: str) -> str:
    value = _raw(environ, name)
    if value is None:
        raise SettingsError(f"{name} is not set: {what}")
    return value


def env_choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(environ, name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: one of {', '.join(choices)}")
    return value


def env_int(environ: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: not an integer") from None
    if minimum is not None and parsed < minimum:
        raise SettingsError(f"{name}={value!r}: must be at least {minimum}")
    return parsed


def env_float(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float | None = None
) -> float:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: not a number") from None
    if not math.isfinite(parsed):
        raise SettingsError(f"{name}={value!r}: not a finite number")
    if minimum is not None and parsed < minimum:
        raise SettingsError(f"{name}={value!r}: must be at least {minimum}")
    return parsed


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(environ, name)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise SettingsError(f"{name}={value!r}: not a boolean (true/false, 1/0, yes/no, on/off)")


def env_list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks between commas are dropped."""
    return tuple(part.strip() for part in (_raw(environ, name) or "").split(",") if part.strip())

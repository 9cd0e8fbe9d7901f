"""Go-style durations (`720h`, `1h30m`, `90s`), plus `d` for days (`30d` = 720h).

Used for `AIKey.spec.ttl`, `spec.rotationGracePeriod`, rate-limit windows, `AIProvider.spec.timeout`
and the CLI's `--ttl`/`--grace`. Every duration field has a maximum (`MAX_TTL`, …): the CRDs refuse
larger values (CEL, `seconds_cel`), and the operator checks the same bound (`bounded`) before it
computes with one (an object stored before the bound existed), so no date arithmetic overflows.
"""

from __future__ import annotations

import datetime as dt
import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# the same grammar the CRD's CEL/pattern validation uses
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")


# the largest value of each duration field (Python's datetime ends in the year 9999)
MAX_TTL = "36500d"  # spec.ttl: 100 years
MAX_GRACE = "365d"  # spec.rotationGracePeriod
MAX_WINDOW = "1d"  # limits.window (rate limits; budgets per period are the Allocation's)
MAX_TIMEOUT = "1d"  # AIProvider spec.timeout


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> dt.timedelta:
    """`"1h30m"` → timedelta(hours=1, minutes=30). Raises DurationError with an example."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise DurationError(
            f"{text!r} is not a duration like '720h', '30d' or '1h30m' (units: ms, s, m, h, d)"
        )
    seconds = sum(float(value) * _UNITS[unit] for value, unit in _PART.findall(text))
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    """timedelta → the shortest Go-style string (`'720h'`, `'1h30m'`, `'45s'`)."""
    total = int(delta.total_seconds())
    if total <= 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if v]
    return "".join(parts)


def bounded(text: str, maximum: str, what: str) -> dt.timedelta:
    """`parse_duration`, and at most `maximum`; DurationError naming `what` otherwise."""
    try:
        delta = parse_duration(text)
    except OverflowError:
        delta = dt.timedelta.max
    except DurationError as err:
        raise DurationError(f"{what}: {err}") from None
    if delta > parse_duration(maximum):
        raise DurationError(f"{what} must be at most {maximum}, not {text!r}")
    return delta


def seconds_cel(value: str = "self") -> str:
    """A CEL expression: the duration string `value` (matching DURATION_PATTERN) in seconds, a double.
    Uses the Kubernetes CEL libraries (regex `findAll`, list `sum`)."""
    factor = " : ".join(f"p.endsWith('{unit}') ? {float(_UNITS[unit])}" for unit in ("ms", "d", "h", "m"))
    return (
        rf"{value}.findAll(r'[0-9]+(\.[0-9]+)?(ms|s|m|h|d)')"
        rf".map(p, double(p.find(r'^[0-9]+(\.[0-9]+)?')) * ({factor} : 1.0)).sum()"
    )

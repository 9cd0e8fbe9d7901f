"""Go-style durations (`720h`, `1h30m`, `90s`), plus `d` for days (`30d` = 720h).

Used for `AIKey.spec.ttl`, `spec.rotationGracePeriod` and the CLI's `--ttl`/`--grace`.
"""

from __future__ import annotations

import datetime as dt
import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# the same grammar the CRD's CEL/pattern validation uses
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")


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

"""Terminal output: aligned tables, dates, per-day bars. Colour only reaches a TTY (click strips it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import click

BLOCKS = " ▏▎▍▌▋▊▉█"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = (
        [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
        if rows
        else [len(h) for h in headers]
    )
    header = "   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    lines = [click.style(header, bold=True)]
    lines += ["   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def when(value: str | None) -> str:
    """RFC 3339 → `2026-11-27 21:38` (UTC); '-' when empty."""
    if not value:
        return "-"
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


def bar(value: float, largest: float, width: int = 30) -> str:
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / largest * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (BLOCKS[rest] if rest else "")

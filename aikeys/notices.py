"""Notices from gateways to the operator, through Redis: upstreams that reported more usage than
the cap the gateway sent them.

Such a request is charged what the upstream reports (that is what the provider bills), so the
allocation can go past its budget by the difference. Gateways need no Kubernetes write access to
say so: each overrun is pushed to a short list per AIProvider, and the operator takes the list
on its next AIProvider refresh and posts one Warning event `UpstreamOverReported`.

    aikeys:{provider/<namespace>/<name>}:overruns   LIST of JSON records, newest first, capped
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

KEEP = 100  # records kept per provider between two operator refreshes
TTL_SECONDS = 86_400


def key(namespace: str, provider: str) -> str:
    return f"aikeys:{{provider/{namespace}/{provider}}}:overruns"


@dataclass(frozen=True)
class Overrun:
    model: str
    cap: int  # output tokens the gateway allowed (all choices)
    reported: int  # output tokens the upstream reported
    request_id: str


async def report(client: Any, namespace: str, provider: str, overrun: Overrun) -> None:
    """Record one overrun (one round trip; errors are the caller's to ignore)."""
    k = key(namespace, provider)
    record = orjson.dumps(overrun.__dict__)
    pipe = client.pipeline(transaction=False)
    pipe.lpush(k, record)
    pipe.ltrim(k, 0, KEEP - 1)
    pipe.expire(k, TTL_SECONDS)
    await pipe.execute()


_TAKE = "local v = redis.call('LRANGE', KEYS[1], 0, -1) redis.call('DEL', KEYS[1]) return v"


async def take(client: Any, namespace: str, provider: str) -> list[Overrun]:
    """Atomically read and clear the provider's overruns, oldest first."""
    raw = await client.eval(_TAKE, 1, key(namespace, provider))
    out = []
    for item in reversed(raw or []):
        try:
            fields = orjson.loads(item)
            out.append(
                Overrun(
                    str(fields["model"]),
                    int(fields["cap"]),
                    int(fields["reported"]),
                    str(fields["request_id"]),
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out

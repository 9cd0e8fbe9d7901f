"""Redis key names of one allocation's ledger. Pure: no I/O.

Every key of an allocation carries the hash tag `{<namespace>/<name>}`, so all keys a script
touches live in one Redis Cluster slot:

    aikeys:{team-a/research}:period:<period id>   HASH spent, reserved, tokens, reserved_tokens, requests
    aikeys:{team-a/research}:leases               ZSET request id → lease expiry (ms)
    aikeys:{team-a/research}:res                  HASH request id → reservation
    aikeys:{team-a/research}:done:<request id>    STRING settled/reaped/released marker, expires
    aikeys:{team-a/research}:usage:<yyyymmdd>     HASH "<key>|<model>|req|in|out|cost" → integer
    aikeys:{team-a/research}:keyspend:<period id> HASH key → nano-USD spent in the period
    aikeys:{team-a/research}:lastused             HASH key → epoch ms
    aikeys:{team-a/research}:dirty                SET keys charged since the operator last looked
    aikeys:{team-a/research}:keylabels            HASH key → "<name>|<owner>" (for display)

A key is counted by its AIKey's uid (`<key>` above), never by its name: a new key named like a
deleted one starts from nothing. Its name and owner are only shown (`keylabels`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORBIDDEN = "|{}"


def check_component(value: str, what: str) -> str:
    """Names go into keys and `|`-separated records: refuse the separators."""
    if not value or any(c in value for c in FORBIDDEN):
        raise ValueError(f"{what} {value!r} must be non-empty and contain none of {FORBIDDEN!r}")
    return value


@dataclass(frozen=True)
class AllocationKeys:
    namespace: str
    name: str
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        check_component(self.namespace, "namespace")
        check_component(self.name, "allocation name")
        object.__setattr__(self, "prefix", f"aikeys:{{{self.namespace}/{self.name}}}:")

    def period(self, period_id: str) -> str:
        return f"{self.prefix}period:{period_id}"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    @property
    def reservations(self) -> str:
        return f"{self.prefix}res"

    def done(self, request_id: str) -> str:
        return f"{self.prefix}done:{check_component(request_id, 'request id')}"

    def key_spend(self, period_id: str) -> str:
        return f"{self.prefix}keyspend:{period_id}"

    def usage(self, day_id: str) -> str:
        return f"{self.prefix}usage:{day_id}"

    @property
    def last_used(self) -> str:
        return f"{self.prefix}lastused"

    @property
    def dirty(self) -> str:
        return f"{self.prefix}dirty"

    @property
    def key_labels(self) -> str:
        return f"{self.prefix}keylabels"

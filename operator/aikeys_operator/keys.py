"""An AIKey's life: mint, rotate, expire, disable — computed, then written with optimistic concurrency.

`reconcile` is idempotent: it reads the AIKey (and its Secret when a key is due), and returns
the status it should have plus the events to post. Minting happens only when status has no
key for the current `spec.rotation`, in three writes, each conditional on what was read:

1. status `pendingKeyHash`: the SHA-256 of the key about to be written (the plaintext stays in
   memory);
2. the Secret, created, or replaced at the resourceVersion read before step 1;
3. status `keyHash` (and the rest), `pendingKeyHash` cleared.

The operator takes a key found in the Secret only if it hashes to `pendingKeyHash`: that is the
one it wrote before stopping between 2 and 3 (a crash, a conflict), and it finishes the mint with
it. Anything else there (labels, owner reference and annotations are no proof: whoever may create
Secrets can write them) is replaced by a freshly minted key with a Warning event `SecretReplaced`,
so a key planted by someone else never becomes the AIKey's. A stop between 1 and 2 leaves a
pending hash no Secret holds: the next run mints afresh. So each Secret only ever holds keys the
operator minted, and the one status names is in it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pydantic

from aikeys import keys as keyformat
from aikeys.durations import MAX_GRACE, MAX_TTL, DurationError, bounded, parse_duration
from aikeys.kube.client import KubeClient, path, resource_path
from aikeys.lifecycle import expiry, next_deadline, phase, previous_key_valid
from aikeys.resources import AIKeySpec, AIKeyStatus, KeyPhase
from aikeys_operator import secrets
from aikeys_operator.conditions import condition, set_condition, stamp

INVALID = "InvalidSpec"


class SecretConflict(Exception):
    """A Secret with the key's name exists and aikeys may not overwrite it."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]  # merge patch for .status (None deletes a field)
    events: list[Event] = field(default_factory=list)
    next_deadline: dt.datetime | None = None
    base: dict[str, Any] | None = None  # the object the patch applies to, if not the one reconciled


async def _write_key(
    aikey: dict[str, Any], kube: KubeClient, old: AIKeyStatus, rotation: int, gateway_url: str | None
) -> tuple[str, str, dict[str, Any], list[Event]]:
    """Put a key for `rotation` into the AIKey's Secret: the pending one if the Secret holds it,
    else a new one. Returns (hash, hint, the AIKey as last written, events)."""
    meta = aikey["metadata"]
    name = secrets.secret_name(meta["name"])
    existing = await kube.get_or_none(path("v1", "secrets", meta["namespace"], name))
    found = secrets.held(existing) if existing is not None else None
    if found is not None and old.pending_key_hash is not None and found[0] == old.pending_key_hash:
        return found[0], found[1], aikey, []  # written before an interruption: finish the mint
    events: list[Event] = []
    if existing is not None:
        refusal = secrets.not_replaceable(existing)
        if refusal:
            raise SecretConflict(refusal)
        known = {old.key_hash, old.previous_key_hash, old.pending_key_hash} - {None}
        if found is None or found[0] not in known:
            events.append(
                Event(
                    "Warning",
                    "SecretReplaced",
                    f"Secret {name} held a key aikeys did not mint for this AIKey (labels, owner and "
                    "annotations are no proof: it may have been planted); it is replaced by a new "
                    "key, and the gateway never accepted the one it held for this AIKey",
                )
            )
    plaintext = keyformat.mint()
    key_hash, hint = keyformat.key_hash(plaintext), keyformat.hint(plaintext)
    aikey = await write_status(kube, aikey, {"pendingKeyHash": key_hash})  # 409: the caller retries
    if existing is None:
        body = secrets.build(aikey, plaintext, rotation, gateway_url)
        await kube.create(path("v1", "secrets", meta["namespace"]), body)  # 409: created meanwhile
    else:
        body = secrets.build(aikey, plaintext, rotation, gateway_url, existing["metadata"]["resourceVersion"])
        await kube.replace(path("v1", "secrets", meta["namespace"], name), body)  # 409: changed meanwhile
    return key_hash, hint, aikey, events


_READY = {
    KeyPhase.ACTIVE: ("Active", "The key is accepted by the gateway"),
    KeyPhase.PENDING: ("NoKeyYet", "No key has been minted yet"),
    KeyPhase.EXPIRED: ("Expired", "The key has expired; create a new AIKey or set a later expiry"),
    KeyPhase.DISABLED: ("Disabled", "spec.disabled is true"),
}


async def _mint(
    aikey: dict[str, Any],
    kube: KubeClient,
    spec: AIKeySpec,
    old: AIKeyStatus,
    now: dt.datetime,
    gateway_url: str | None,
) -> tuple[dict[str, Any], AIKeyStatus, list[Event], dict[str, Any]]:
    """Mint (or finish minting) the key of spec.rotation; returns status patch, new status, events
    and the AIKey the patch applies to."""
    key_hash, hint, base, events = await _write_key(aikey, kube, old, spec.rotation, gateway_url)
    name = secrets.secret_name(aikey["metadata"]["name"])
    created = old.created_at or now
    patch: dict[str, Any] = {
        "keyHash": key_hash,
        "keyHint": hint,
        "observedRotation": spec.rotation,
        "secretName": name,
        "createdAt": stamp(created),
        "pendingKeyHash": None,
    }
    if gateway_url:
        patch["baseURL"] = gateway_url  # where to use it, after the Secret is read and deleted
    current = old.model_copy(
        update={
            "key_hash": key_hash,
            "key_hint": hint,
            "observed_rotation": spec.rotation,
            "created_at": created,
            "secret_name": name,
        }
    )
    if old.key_hash is None or old.key_hash == key_hash:
        return (
            patch,
            current,
            [*events, Event("Normal", "Minted", f"Minted key {hint} into Secret {name}")],
            base,
        )
    grace = parse_duration(spec.rotation_grace_period)
    until = now + grace if grace.total_seconds() > 0 else None
    patch.update(
        {
            "previousKeyHash": old.key_hash if until else None,
            "previousKeyValidUntil": stamp(until) if until else None,
        }
    )
    current = current.model_copy(
        update={"previous_key_hash": old.key_hash if until else None, "previous_key_valid_until": until}
    )
    after = f"works until {stamp(until)}" if until else "stopped working now"
    rotated = Event("Normal", "Rotated", f"Rotated to {hint}; the previous key {old.key_hint} {after}")
    return patch, current, [*events, rotated], base


def _transition_event(
    old: KeyPhase | None, new: KeyPhase, current: AIKeyStatus, now: dt.datetime
) -> Event | None:
    if new == old:
        return None
    if new is KeyPhase.EXPIRED:
        return Event(
            "Warning", "Expired", f"Key {current.key_hint} expired at {stamp(current.expires_at or now)}"
        )
    if new is KeyPhase.DISABLED:
        return Event("Normal", "Disabled", f"Key {current.key_hint} is disabled (spec.disabled)")
    if new is KeyPhase.ACTIVE and old is KeyPhase.DISABLED:
        return Event("Normal", "Enabled", f"Key {current.key_hint} is enabled again")
    return None


def spec_problem(spec: AIKeySpec) -> str | None:
    """What in the spec the operator cannot compute with, or None. The CRD refuses such values;
    an AIKey stored before it did (or under an older CRD) still gets a readable answer."""
    try:
        if spec.ttl is not None:
            bounded(spec.ttl, MAX_TTL, "spec.ttl")
        bounded(spec.rotation_grace_period, MAX_GRACE, "spec.rotationGracePeriod")
    except DurationError as err:
        return str(err)
    return None


def unreadable(err: pydantic.ValidationError) -> str:
    """A ValidationError of an AIKey, in one line: which fields, and why."""
    problems = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
    return "the AIKey cannot be read (" + "; ".join(problems) + ")"


def invalid(aikey: dict[str, Any], problem: str, now: dt.datetime) -> Outcome:
    """Ready=False/InvalidSpec saying why, and a Warning event when that is news. Nothing is
    minted or rotated, and nothing retried, until the AIKey changes."""
    meta = aikey["metadata"]
    raw = aikey.get("status") or {}
    message = f"{problem}; nothing is minted or rotated until the spec is fixed"
    before = condition(raw.get("conditions"), "Ready") or {}
    conditions = set_condition(
        raw.get("conditions"), "Ready", False, INVALID, message, now, meta.get("generation")
    )
    patch: dict[str, Any] = {} if conditions == raw.get("conditions") else {"conditions": conditions}
    if meta.get("generation") is not None and raw.get("observedGeneration") != meta["generation"]:
        patch["observedGeneration"] = meta["generation"]
    news = (before.get("reason"), before.get("message")) != (INVALID, message)
    return Outcome(patch, [Event("Warning", INVALID, message)] if news else [])


def needs_key(spec: AIKeySpec, status: AIKeyStatus) -> bool:
    """Whether a key has to be minted (none yet, or spec.rotation asks for a new one)."""
    return status.key_hash is None or (status.observed_rotation or 0) < spec.rotation


@dataclass(frozen=True)
class Assessment:
    """What an AIKey needs, from the object alone (no API call): the operator's index keeps this
    instead of the object."""

    work: bool  # a key to mint, or a status to correct
    urgent: bool  # the key exists already (a rotation, disable, expiry, spec change): not behind new keys
    deadline: dt.datetime | None  # when its state changes by itself next


def assess(aikey: dict[str, Any], now: dt.datetime) -> Assessment:
    spec = AIKeySpec.model_validate(aikey.get("spec") or {})
    old = AIKeyStatus.model_validate(aikey.get("status") or {})
    problem = spec_problem(spec)
    if problem is not None:
        return Assessment(bool(invalid(aikey, problem, now).status), True, None)
    if needs_key(spec, old):
        return Assessment(True, old.key_hash is not None, None)
    outcome = _settle(aikey["metadata"], spec, old, old, {}, [], now)
    return Assessment(bool(outcome.status), True, outcome.next_deadline)


async def reconcile(
    aikey: dict[str, Any],
    kube: KubeClient | None,
    now: dt.datetime,
    gateway_url: str | None = None,
) -> Outcome:
    """What the AIKey's status should be now. With `kube=None` nothing is minted (timers)."""
    meta = aikey["metadata"]
    spec = AIKeySpec.model_validate(aikey.get("spec") or {})
    old = AIKeyStatus.model_validate(aikey.get("status") or {})
    problem = spec_problem(spec)
    if problem is not None:
        return invalid(aikey, problem, now)
    patch: dict[str, Any] = {}
    events: list[Event] = []
    current, base = old, None
    if kube is not None and needs_key(spec, old):
        patch, current, events, base = await _mint(aikey, kube, spec, old, now, gateway_url)
    outcome = _settle(meta, spec, old, current, patch, events, now)
    outcome.base = base
    return outcome


def _settle(
    meta: dict[str, Any],
    spec: AIKeySpec,
    old: AIKeyStatus,
    current: AIKeyStatus,
    patch: dict[str, Any],
    events: list[Event],
    now: dt.datetime,
) -> Outcome:
    """The rest of the status (expiry, grace, phase, conditions) from the key status `current`."""
    if current.created_at is not None:
        expires = expiry(spec, current.created_at)
        if expires != old.expires_at:
            patch["expiresAt"] = stamp(expires) if expires else None
        current = current.model_copy(update={"expires_at": expires})

    if current.previous_key_hash is not None and not previous_key_valid(current, now):
        patch.update({"previousKeyHash": None, "previousKeyValidUntil": None})
        current = current.model_copy(update={"previous_key_hash": None, "previous_key_valid_until": None})

    new_phase = phase(spec, current, now)
    if new_phase != old.phase:
        patch["phase"] = new_phase.value
    event = _transition_event(old.phase, new_phase, current, now)
    if event:
        events.append(event)

    reason, message = _READY[new_phase]
    old_conditions = [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in old.conditions]
    conditions = set_condition(
        old_conditions, "Ready", new_phase is KeyPhase.ACTIVE, reason, message, now, meta.get("generation")
    )
    if conditions != old_conditions:
        patch["conditions"] = conditions
    if meta.get("generation") is not None and meta["generation"] != old.observed_generation:
        patch["observedGeneration"] = meta["generation"]
    return Outcome(status=patch, events=events, next_deadline=next_deadline(spec, current, now))


async def write_status(
    kube: KubeClient, aikey: dict[str, Any], status_patch: dict[str, Any]
) -> dict[str, Any]:
    """Merge-patch .status, conditional on the resourceVersion the patch was computed from."""
    meta = aikey["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status_patch}
    return await kube.patch(resource_path("aikeys", meta["namespace"], meta["name"], "status"), body)

"""An AIKey's life: mint, rotate, expire, disable — computed, then written with optimistic concurrency.

`reconcile` is idempotent: it reads the AIKey (and its Secret when a key is due), and returns
the status it should have plus the events to post. Minting happens only when status has no
key for the current `spec.rotation`; the Secret is written before status, and a Secret that
already holds the key for this rotation is adopted, so a crash between the two never mints a
second key or loses the first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from aikeys import keys as keyformat
from aikeys.durations import parse_duration
from aikeys.kube.client import Conflict, KubeClient, path, resource_path
from aikeys.lifecycle import expiry, next_deadline, phase, previous_key_valid
from aikeys.resources import AIKeySpec, AIKeyStatus, KeyPhase
from aikeys_operator import secrets
from aikeys_operator.conditions import set_condition, stamp

KEY_HINT = "aikeys.dev/key-hint"


class SecretConflict(Exception):
    """A Secret with the key's name exists and is not aikeys': we do not overwrite it."""


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


async def _write_key(
    aikey: dict[str, Any], kube: KubeClient, rotation: int, gateway_url: str | None, first: bool = False
) -> tuple[str, str, bool]:
    """Put a key for `rotation` into the AIKey's Secret. Returns (hash, hint, minted_now).

    `first` (no key in status yet): try to create the Secret straight away, one request for a new
    key; a Secret that exists (written before a crash, or not ours) answers 409 and is read."""
    meta = aikey["metadata"]
    name = secrets.secret_name(meta["name"])
    one = path("v1", "secrets", meta["namespace"], name)
    if first:
        fresh = keyformat.mint()
        fresh_hash, fresh_hint = keyformat.key_hash(fresh), keyformat.hint(fresh)
        body = secrets.build(aikey, fresh, fresh_hash, rotation, gateway_url)
        body["metadata"]["annotations"][KEY_HINT] = fresh_hint
        try:
            await kube.create(path("v1", "secrets", meta["namespace"]), body)
            return fresh_hash, fresh_hint, True
        except Conflict:
            pass  # it exists: adopt it, or replace it if it is ours but for another rotation
    existing = await kube.get_or_none(one)
    if existing is not None:
        stored = secrets.read(existing)
        owners = existing["metadata"].get("ownerReferences") or []
        ours = any(o.get("uid") == meta["uid"] for o in owners)
        managed = (existing["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "aikeys"
        if not managed:
            raise SecretConflict(f"Secret {name} exists and is not managed by aikeys; rename or delete it")
        hint = (existing["metadata"].get("annotations") or {}).get(KEY_HINT)
        if ours and stored.rotation == rotation and stored.key_hash and hint:
            return stored.key_hash, hint, False  # written by an earlier run: adopt it
    plaintext = keyformat.mint()
    key_hash, hint = keyformat.key_hash(plaintext), keyformat.hint(plaintext)
    body = secrets.build(
        aikey,
        plaintext,
        key_hash,
        rotation,
        gateway_url,
        None if existing is None else existing["metadata"]["resourceVersion"],
    )
    body["metadata"]["annotations"][KEY_HINT] = hint
    if existing is None:
        await kube.create(path("v1", "secrets", meta["namespace"]), body)
    else:
        await kube.replace(one, body)  # 409 if it changed meanwhile: the caller retries
    return key_hash, hint, True


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
) -> tuple[dict[str, Any], AIKeyStatus, list[Event]]:
    """Mint (or adopt) the key of spec.rotation; returns status patch, new status and events."""
    key_hash, hint, _ = await _write_key(aikey, kube, spec.rotation, gateway_url, first=old.key_hash is None)
    name = secrets.secret_name(aikey["metadata"]["name"])
    created = old.created_at or now
    patch: dict[str, Any] = {
        "keyHash": key_hash,
        "keyHint": hint,
        "observedRotation": spec.rotation,
        "secretName": name,
        "createdAt": stamp(created),
    }
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
        return patch, current, [Event("Normal", "Minted", f"Minted key {hint} into Secret {name}")]
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
    return (
        patch,
        current,
        [Event("Normal", "Rotated", f"Rotated to {hint}; the previous key {old.key_hint} {after}")],
    )


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
    patch: dict[str, Any] = {}
    events: list[Event] = []
    current = old
    if kube is not None and needs_key(spec, old):
        patch, current, events = await _mint(aikey, kube, spec, old, now, gateway_url)
    return _settle(meta, spec, old, current, patch, events, now)


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

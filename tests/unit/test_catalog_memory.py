"""The gateway's key cache keeps only what a request needs: measured per key (the target is
≈ 1.5 KB a key, 150 MB for 100,000 keys; the parsed AIKeySpec/AIKeyStatus models cost ~5 KB)."""

from __future__ import annotations

import gc
import hashlib
import json
import tracemalloc
from typing import Any

from aikeys_gateway.cache.catalog import KeyEntry, key_entry


def _aikey(i: int) -> dict[str, Any]:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return {
        "metadata": {
            "namespace": f"team-{i % 10}",
            "name": f"key-{i:06d}",
            "uid": f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}",
            "resourceVersion": str(i),
        },
        "spec": {
            "allocationRef": {"name": f"alloc-{i % 100}"},
            "ttl": "720h",
            "models": ["team-0:openai/*"],
            "description": f"the key of person {i}",
        },
        "status": {
            "phase": "Active",
            "keyHash": digest,
            "keyHint": f"aik_…{digest[:4]}",
            "createdAt": "2026-03-01T00:00:00Z",
            "expiresAt": "2026-03-31T00:00:00Z",
            "lastUsedAt": "2026-03-14T12:00:00Z",
            "spend": "1.234567",
            "observedRotation": 0,
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Active",
                    "message": "The key is accepted by the gateway",
                    "lastTransitionTime": "2026-03-01T00:00:00Z",
                }
            ],
        },
    }


def test_a_cached_key_costs_under_a_kilobyte_and_a_half() -> None:
    n = 5000
    listing = json.dumps([_aikey(i) for i in range(n)])
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        objects: dict[tuple[str, str], KeyEntry] = {}
        by_hash: dict[str, KeyEntry] = {}
        for obj in json.loads(listing):  # as the informer does: each object converted, then dropped
            entry = key_entry(obj)
            objects[(entry.namespace, entry.name)] = entry
            by_hash[entry.status.key_hash or ""] = entry
        del obj
        gc.collect()
        per_key = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    print(f"\n{per_key:.0f} bytes a cached key")
    assert per_key < 1536
    entry = objects[("team-3", "key-000003")]
    assert entry.allocation == "alloc-3" and entry.allows("team-0:openai/gpt-4o")
    assert entry.status.key_hint and entry.status.expires_at and entry.spec.models == ("team-0:openai/*",)
    assert entry.patterns[0] is objects[("team-4", "key-000004")].patterns[0]  # one compiled pattern

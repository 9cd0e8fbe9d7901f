"""People, not keys: Kubernetes tokens checked with TokenReview, rights with SubjectAccessReview.

Whoever may `list aikeys` in a namespace may read that namespace's usage; `list aikeys` across the
cluster reads every namespace's. The gateway asks the API server with its own identity (it needs
`create` on tokenreviews and subjectaccessreviews, nothing more). Answers are cached briefly.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from aikeys.kube.client import KubeClient
from aikeys.resources import GROUP
from aikeys_gateway.errors import GatewayError, unauthorized


@dataclass(frozen=True)
class Person:
    username: str
    uid: str
    groups: tuple[str, ...]


class KubeAuth:
    def __init__(self, kube: KubeClient, ttl: float = 30.0):
        self.kube = kube
        self.ttl = ttl
        self._people: dict[str, tuple[float, Person | None]] = {}
        self._rights: dict[tuple[str, str], tuple[float, bool]] = {}

    async def person(self, token: str) -> Person:
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._people.get(digest)
        if cached and cached[0] > time.monotonic():
            found = cached[1]
        else:
            review = await self.kube.create(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
            )
            status = review.get("status") or {}
            user = status.get("user") or {}
            found = (
                Person(user["username"], user.get("uid", ""), tuple(user.get("groups") or []))
                if status.get("authenticated")
                else None
            )
            self._people[digest] = (time.monotonic() + self.ttl, found)
        if found is None:
            raise unauthorized(
                "The Kubernetes token was not accepted by the API server (expired or unknown)."
            )
        return found

    async def may_list_aikeys(self, person: Person, namespace: str) -> bool:
        """namespace "" asks about the whole cluster."""
        cache_key = (person.username + "|" + ",".join(person.groups), namespace)
        cached = self._rights.get(cache_key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        attrs = {"verb": "list", "group": GROUP, "resource": "aikeys"}
        if namespace:
            attrs["namespace"] = namespace
        review = await self.kube.create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": person.username,
                    "uid": person.uid,
                    "groups": list(person.groups),
                    "resourceAttributes": attrs,
                },
            },
        )
        allowed = bool((review.get("status") or {}).get("allowed"))
        self._rights[cache_key] = (time.monotonic() + self.ttl, allowed)
        return allowed

    async def require(self, person: Person, namespace: str) -> None:
        if not await self.may_list_aikeys(person, namespace):
            where = f"namespace {namespace}" if namespace else "all namespaces"
            raise GatewayError(
                403,
                f"{person.username} may not list aikeys in {where}, so may not read its usage.",
                "permission_error",
                "forbidden",
            )

"""People, not keys: Kubernetes tokens checked with TokenReview, rights with SubjectAccessReview.

One right reads usage on every path: whoever may `list keyusages.usage.aikeys.dev` in a namespace
reads that namespace's usage (`/api/usage`, the AI Usage page, `kubectl get keyusages`); across the
cluster, every namespace's. The gateway asks the API server with its own identity (it needs
`create` on tokenreviews and subjectaccessreviews, nothing more). Answers are cached briefly: a
token for 5 s (one the API server stops accepting, a deleted ServiceAccount's, is refused here at
most 5 s later; kube-apiserver itself keeps a valid token's answer for 10 s), a right for 10 s (as
the usage API's), a refusal for 2 s.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

from aikeys.kube.client import KubeClient
from aikeys.resources import GROUP
from aikeys_gateway.errors import GatewayError, unauthorized

USAGE_GROUP = "usage.aikeys.dev"
USAGE = (USAGE_GROUP, "keyusages")  # the usage API's resource: the one right to read usage
AIKEYS = (GROUP, "aikeys")


@dataclass(frozen=True)
class Person:
    username: str
    uid: str
    groups: tuple[str, ...]


K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most `size` answers, each for its own time; the oldest entry goes first when full."""

    def __init__(self, size: int):
        self.size = size
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> tuple[bool, V | None]:
        item = self._items.get(key)
        if item is None:
            return False, None
        if item[0] <= time.monotonic():
            del self._items[key]
            return False, None
        return True, item[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        self._items.pop(key, None)
        while len(self._items) >= self.size:
            del self._items[next(iter(self._items))]
        self._items[key] = (time.monotonic() + ttl, value)

    def __len__(self) -> int:
        return len(self._items)


class KubeAuth:
    """TokenReview answers are cached for `ttl`, SubjectAccessReview answers for `rights_ttl` (a
    refusal of either only for `refused_ttl`), at most `size` of each kind, so neither a flood of
    bad tokens nor of good ones grows memory."""

    def __init__(
        self,
        kube: KubeClient,
        ttl: float = 5.0,
        rights_ttl: float = 10.0,
        refused_ttl: float = 2.0,
        size: int = 4096,
    ):
        self.kube = kube
        self.ttl = ttl
        self.rights_ttl = rights_ttl
        self.refused_ttl = refused_ttl
        self._people: TTLCache[str, Person | None] = TTLCache(size)
        self._rights: TTLCache[tuple[str, str, str, str], bool] = TTLCache(size)

    async def person(self, token: str) -> Person:
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit, found = self._people.get(digest)
        if not hit:
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
            self._people.put(digest, found, self.ttl if found is not None else self.refused_ttl)
        if found is None:
            raise unauthorized(
                "The Kubernetes token was not accepted by the API server (expired or unknown)."
            )
        return found

    async def may_list(self, person: Person, namespace: str, resource: tuple[str, str] = USAGE) -> bool:
        """May the person `list` the (group, resource) in the namespace ("": the whole cluster)?"""
        return await self.may(person, "list", namespace, resource)

    async def may_own_for_others(self, person: Person, namespace: str) -> bool:
        """The key-owner exception: may the person `create` the virtual resource aikeys/owner in
        the namespace, so the admission policy lets them act on others' keys?"""
        return await self.may(person, "create", namespace, AIKEYS, "owner")

    async def may(
        self, person: Person, verb: str, namespace: str, resource: tuple[str, str], subresource: str = ""
    ) -> bool:
        """A SubjectAccessReview of the person's `verb` on (group, resource[/subresource]) in the
        namespace ("": cluster-wide), as the API server would decide it."""
        group, plural = resource
        cache_key = (
            person.username + "|" + ",".join(person.groups),
            namespace,
            group,
            f"{verb} {plural}/{subresource}",
        )
        hit, cached = self._rights.get(cache_key)
        if hit and cached is not None:
            return cached
        attrs = {"verb": verb, "group": group, "resource": plural}
        if subresource:
            attrs["subresource"] = subresource
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
        self._rights.put(cache_key, allowed, self.rights_ttl if allowed else self.refused_ttl)
        return allowed

    async def require_usage(self, person: Person, namespace: str) -> None:
        """403 unless the person may read the namespace's usage ("": every namespace's)."""
        if not await self.may_list(person, namespace, USAGE):
            where = f"namespace {namespace}" if namespace else "all namespaces"
            raise GatewayError(
                403,
                f"{person.username} may not list keyusages.{USAGE_GROUP} in {where}, so may not read "
                "its usage.",
                "permission_error",
                "forbidden",
            )

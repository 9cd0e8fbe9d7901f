"""The ledger over Redis: reserve → settle | release, one Lua script call each.

    ledger = Ledger(connect("redis://..."))
    outcome = await ledger.reserve(alloc, request_id, key, model, estimate, label=label)
    ...  # call the model only when outcome.accepted
    await ledger.settle(alloc, request_id, key, model, input_tokens, output_tokens, cost, label,
                        cached_tokens=..., cache_write_tokens=...)

`key` is the key's identity: the gateway passes the AIKey's uid, so that a new key named like a
deleted one starts from nothing; `label` (its name and owner) is only kept for usage reports.

Scripts run with EVALSHA and are reloaded on NOSCRIPT: through redis-py's Script objects, or,
when the Ledger is given one, over a pipelined connection of their own (`pipelined()`, the
gateway's hot path). Redis errors and timeouts surface as `LedgerUnavailable`, so callers can
fail closed.

A reserve carries a deadline in Redis's own clock (`TIME`): when Redis runs it later than that
(it was stalled and the caller has already given up and answered 503), the script writes
nothing and returns `EXPIRED`. `sync_clock()` measures the offset between this process's clock
and Redis's; until then it is taken as 0.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.exceptions

from aikeys.ledger import scripts
from aikeys.ledger.names import AllocationKeys, check_component
from aikeys.ledger.pipelined import Pipelined
from aikeys.periods import Period, Window, day_id, window

MAX_AMOUNT = 2**53 - 1  # Lua numbers are doubles: integers are exact below 2^53
DAY = 86_400

RedisClient = aioredis.Redis | aiocluster.RedisCluster
T = TypeVar("T")


class LedgerUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


async def _guarded(call: Awaitable[T]) -> T:
    """Await a Redis call, turning "Redis is down or slow" into LedgerUnavailable."""
    try:
        return await call
    except _REDIS_DOWN as err:
        raise LedgerUnavailable(f"redis: {type(err).__name__}: {err}") from err


def connect(
    url: str, timeout: float = 0.5, max_connections: int = 64, password: str | None = None
) -> RedisClient:
    """One client (pool) per process. `redis://`, `rediss://`, and Redis Cluster with
    `redis+cluster://` / `rediss+cluster://` or `?cluster=true`. The password comes from the URL or
    the `password` argument (each component's settings read AIKEYS_REDIS_PASSWORD, how the Helm
    chart passes a Secret)."""
    parts = urlsplit(url)
    cluster = parts.scheme.endswith("+cluster") or parse_qs(parts.query).get("cluster") == ["true"]
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": max_connections,
        "decode_responses": True,
    }
    if password and not parts.password:
        common["password"] = password
    if cluster:
        scheme = parts.scheme.replace("+cluster", "")
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("cluster="))
        plain = parts._replace(scheme=scheme, query=query).geturl()
        return aiocluster.RedisCluster.from_url(plain, **common)
    return aioredis.Redis.from_url(url, health_check_interval=30, **common)


def pipelined(url: str, timeout: float = 0.5, password: str | None = None) -> Pipelined | None:
    """The ledger scripts' own pipelined connection (the gateway's hot path, see pipelined.py) to
    the Redis at `url`; None for Redis Cluster, whose scripts go through redis-py (slot routing)."""
    scheme = urlsplit(url).scheme
    if scheme.endswith("+cluster") or parse_qs(urlsplit(url).query).get("cluster") == ["true"]:
        return None
    sources = {name: scripts.source(name) for name in scripts.NAMES}
    return Pipelined.from_url(url, sources, timeout=timeout, password=password)


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens admitted per window (fixed windows in Redis's clock); None: unlimited."""

    requests: int | None
    tokens: int | None
    window_ms: int = 60_000

    def args(self) -> list[int]:
        return [
            -1 if self.requests is None else self.requests,
            -1 if self.tokens is None else self.tokens,
            self.window_ms,
        ]


UNLIMITED_ARGS = [-1, -1, 0]
DEADLINE_ARG = 15  # position of the deadline in the reserve script's packed arguments


@dataclass(frozen=True)
class Allocation:
    """What the ledger needs of an Allocation CR."""

    namespace: str
    name: str
    budget: int  # nano-USD per period
    period: Period = Period.NONE
    token_limit: int | None = None
    limits: RateLimit | None = None

    @cached_property
    def keys(self) -> AllocationKeys:
        return AllocationKeys(self.namespace, self.name)


@dataclass(frozen=True)
class KeyLabel:
    """How a key is shown in usage reports: its name and owner. The ledger counts the key by its
    identity (the AIKey's uid); the label is kept beside it, also after the key is deleted."""

    name: str
    owner: str | None = None

    def encode(self) -> str:
        return f"{check_component(self.name, 'key name')}|{self.owner or ''}"

    @classmethod
    def decode(cls, raw: str) -> KeyLabel:
        name, _, owner = raw.partition("|")  # names have no "|"; owners may
        return cls(name, owner or None)


@dataclass(frozen=True)
class Estimate:
    """Upper bound of a request: cost (nano-USD) and tokens in each direction."""

    cost: int
    input_tokens: int
    output_tokens: int


class ReserveStatus(enum.IntEnum):
    RESERVED = 1
    ALREADY_RESERVED = 2  # a retry of the same request id: still held
    OVER_BUDGET = 0  # also: an estimate beyond MAX_AMOUNT, which no budget can cover
    OVER_TOKEN_LIMIT = -1
    ALREADY_SETTLED = -2  # the request id was settled, reaped or released already
    EXPIRED = -3  # Redis ran the reserve after its deadline: nothing was held (counters are 0)
    RATE_LIMITED_REQUESTS = -4  # over a request rate limit (allocation's or key's): nothing held
    RATE_LIMITED_TOKENS = -5  # over a token rate limit: nothing held


@dataclass(frozen=True)
class RateState:
    """The tightest rate limits a request met, for the x-ratelimit-* headers (-1: no limit)."""

    limit_requests: int = -1
    remaining_requests: int = -1
    limit_tokens: int = -1
    remaining_tokens: int = -1
    reset_ms: int = 0

    @property
    def limited(self) -> bool:
        return self.limit_requests >= 0 or self.limit_tokens >= 0

    def tighter(self, other: RateState) -> RateState:
        """The tighter of two scopes' states, field by field."""

        def pick(limit_a: int, rem_a: int, limit_b: int, rem_b: int) -> tuple[int, int]:
            if limit_b < 0 or (limit_a >= 0 and rem_a <= rem_b):
                return limit_a, rem_a
            return limit_b, rem_b

        lr, rr = pick(
            self.limit_requests, self.remaining_requests, other.limit_requests, other.remaining_requests
        )
        lt, rt = pick(self.limit_tokens, self.remaining_tokens, other.limit_tokens, other.remaining_tokens)
        return RateState(lr, rr, lt, rt, max(self.reset_ms, other.reset_ms))


NO_RATE = RateState()


@dataclass(frozen=True)
class RateOutcome:
    """A model's rate window: admitted (with the window to give back to), or not."""

    admitted: bool
    status: ReserveStatus
    state: RateState
    window_start: int


@dataclass(frozen=True)
class ReserveOutcome:
    status: ReserveStatus
    spent: int
    reserved: int
    tokens: int
    reserved_tokens: int
    rate: RateState = NO_RATE

    @property
    def accepted(self) -> bool:
        return self.status in (ReserveStatus.RESERVED, ReserveStatus.ALREADY_RESERVED)


class SettleStatus(enum.IntEnum):
    CHARGED = 1
    CORRECTED = 3  # the lease had been reaped at its estimate; charged the difference
    DUPLICATE = 0  # already settled: nothing charged


@dataclass(frozen=True)
class SettleOutcome:
    status: SettleStatus
    spent: int
    reserved: int


@dataclass(frozen=True)
class PeriodState:
    spent: int = 0
    reserved: int = 0
    tokens: int = 0
    reserved_tokens: int = 0
    requests: int = 0
    reaped: int = 0
    exists: bool = False  # the period's hash exists in Redis (no traffic yet, or lost, if not)


_COUNTERS = ("spent", "reserved", "tokens", "reserved_tokens", "requests", "reaped")


@dataclass(frozen=True)
class RestoreOutcome:
    """What `Ledger.restore` changed: amounts added to reach the floors (0: already there)."""

    existed: bool  # the period hash existed before the restore
    spent: int = 0  # nano-USD added to `spent`
    tokens: int = 0
    requests: int = 0
    key_spend: dict[str, int] = field(default_factory=dict)  # key → nano-USD added

    @property
    def restored(self) -> bool:
        """Whether anything was raised."""
        return bool(self.spent or self.tokens or self.requests or self.key_spend)


@dataclass(frozen=True)
class Changes:
    """One allocation as the operator's status refresh sees it: the current period's counters, and
    the keys charged since the last `Ledger.changes` (taken: each is handed out once)."""

    state: PeriodState
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyUse:
    """A key's spend in the current period (nano-USD) and its last charge."""

    spend: int
    last_used: dt.datetime | None


@dataclass(frozen=True)
class UsageRow:
    day: str  # yyyymmdd, UTC
    key: str  # the key's identity (the AIKey's uid; its name in records from before uids)
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost: int
    label: KeyLabel | None = None  # the key's name and owner, as last charged (None: not recorded)
    cached_tokens: int = 0  # of input_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens: written to the provider's prompt cache


def _estimate_args(e: Estimate) -> tuple[int, int, int]:
    """cost, input and output tokens for the reserve script. An estimate beyond what the ledger
    can count exactly (2^53) cannot be covered by any budget: it is sent as cost -1, which the
    script refuses as over budget (with the allocation's current counters)."""
    for value, what in (
        (e.cost, "estimated cost"),
        (e.input_tokens, "input tokens"),
        (e.output_tokens, "output tokens"),
    ):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} must be a non-negative integer: {value!r}")
    if max(e.cost, e.input_tokens + e.output_tokens) > MAX_AMOUNT:
        return (-1, 0, 0)
    return (e.cost, e.input_tokens, e.output_tokens)


def _period_window(period: Period, period_id: str) -> Window:
    """The window a period id names (`all`, `d20261127`, `w20261123`, `m202611`)."""
    period = Period(period)
    try:
        if period is Period.NONE:
            start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        elif period is Period.MONTHLY:
            start = dt.datetime.strptime(period_id[1:] + "01", "%Y%m%d").replace(tzinfo=dt.UTC)
        else:
            start = dt.datetime.strptime(period_id[1:], "%Y%m%d").replace(tzinfo=dt.UTC)
    except ValueError:
        start = None
    w = None if start is None else window(period, start)
    if w is None or w.id != period_id:
        raise ValueError(f"{period_id!r} is not the id of a {period.value} period")
    return w


def _amount(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{what} must be an integer in [0, 2^53): {value!r}")
    return value


DEFAULT_RESERVE_TIMEOUT = 0.5  # seconds; connect()'s default socket timeout


def socket_timeout(client: RedisClient) -> float | None:
    """The socket timeout `client` was made with (connect()'s `timeout`), if it can be told."""
    kwargs: dict[str, Any] = (
        client.nodes_manager.connection_kwargs
        if isinstance(client, aiocluster.RedisCluster)
        else client.connection_pool.connection_kwargs
    )
    value = kwargs.get("socket_timeout")
    return float(value) if isinstance(value, int | float) else None


class Ledger:
    """Budgets and usage of allocations in one Redis (or Redis Cluster).

    `clock` is the ledger's business clock (periods, leases, usage days); tests inject one.
    Reserve deadlines are compared with Redis's `TIME`, so they use the real `time.time()`.
    `reserve_timeout` is how long a caller waits for a reserve before giving up: the default
    deadline of a reserve. It defaults to the client's socket timeout (else 0.5 s).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        clock: Callable[[], float] = time.time,
        lease: dt.timedelta = dt.timedelta(minutes=10),
        settled_ttl: dt.timedelta = dt.timedelta(days=7),
        retention: dt.timedelta = dt.timedelta(days=100),
        reserve_timeout: float | None = None,
        pipelined: Pipelined | None = None,
    ):
        """`pipelined`: run the scripts over this connection instead of redis-py's pool (faster;
        see `pipelined()`); every other command still goes through `client`."""
        self.client = client
        self.pipelined = pipelined
        self.clock = clock
        self.lease_ms = int(lease.total_seconds() * 1000)
        self.settled_ttl = int(settled_ttl.total_seconds())
        self.retention = int(retention.total_seconds())
        if reserve_timeout is None:
            reserve_timeout = socket_timeout(client) or DEFAULT_RESERVE_TIMEOUT
        self.reserve_timeout = reserve_timeout
        self.clock_offset = 0.0  # seconds: Redis's TIME minus this process's time.time()
        self.clock_syncs = 0  # how many times sync_clock() measured the offset
        self._sync_lock = asyncio.Lock()
        self._scripts = {name: client.register_script(scripts.source(name)) for name in scripts.NAMES}

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def sync_clock(self) -> float:
        """Measure the offset between Redis's clock and ours (TIME, taken at the midpoint of the
        round trip), store it for reserve deadlines and return it (seconds)."""
        before = time.time()
        seconds, micros = await _guarded(self.client.time())
        after = time.time()
        self.clock_offset = int(seconds) + int(micros) / 1e6 - (before + after) / 2
        self.clock_syncs += 1
        return self.clock_offset

    def _redis_ms(self, local: float) -> int:
        """A local time.time() instant in Redis's clock, epoch ms."""
        return int((local + self.clock_offset) * 1000)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self.pipelined is not None:
            return await _guarded(self.pipelined.run(name, keys, args))
        return await _guarded(self._scripts[name](keys=keys, args=args))

    async def _run_packed(self, name: str, keys: list[str], args: list[Any], label: KeyLabel | None) -> Any:
        """Scripts that take their arguments as one "|"-joined string (cheaper to send than many),
        and the key's label as a second (its owner may contain anything)."""
        return await self._run(name, keys, ["|".join(map(str, args)), *([label.encode()] if label else [])])

    def _period_ttl(self, w: Window, now: dt.datetime) -> int:
        return -1 if w.end is None else int((w.end - now).total_seconds()) + self.retention

    async def reserve(
        self,
        alloc: Allocation,
        request_id: str,
        key: str,
        model: str,
        estimate: Estimate,
        deadline: float | None = None,
        key_limits: RateLimit | None = None,
        label: KeyLabel | None = None,
    ) -> ReserveOutcome:
        """Hold `estimate` against the allocation's budget and the rate limits of the allocation
        and of the key (`key_limits`), or refuse. `key` identifies the key (the AIKey's uid);
        `label` is how usage reports show it.

        `deadline` (local time.time(), default: now + reserve_timeout) is when the caller gives
        up: if Redis runs the reserve later, it takes no effect and the status is EXPIRED.

        An EXPIRED reply is retried once: when it arrives before the deadline has passed here, the
        clock offset is off, so it is measured again first; with the default deadline, the caller
        is evidently still waiting (the reply came; the socket timeout runs from the send, the
        deadline from this call), so the retry gets a fresh one."""
        explicit = deadline is not None
        if deadline is None:
            deadline = time.time() + self.reserve_timeout
        now = self.now()
        k = alloc.keys
        w = window(alloc.period, now)
        args = [
            request_id,
            int(now.timestamp() * 1000),
            self.lease_ms,
            *_estimate_args(estimate),
            _amount(alloc.budget, "budget"),
            -1 if alloc.token_limit is None else _amount(alloc.token_limit, "token limit"),
            self._period_ttl(w, now),
            w.id,
            check_component(key, "key"),
            check_component(model, "model"),
            self.settled_ttl,
            self.retention,
            day_id(now),
            self._redis_ms(deadline),
            *(alloc.limits.args() if alloc.limits else UNLIMITED_ARGS),
            *(key_limits.args() if key_limits else UNLIMITED_ARGS),
        ]
        keys = [k.period(w.id), k.leases, k.reservations, k.done(request_id)]
        syncs = self.clock_syncs
        raw = await self._run_packed("reserve", keys, args, label)
        if int(raw[0]) == ReserveStatus.EXPIRED:
            early = time.time() < deadline
            if early:
                async with self._sync_lock:  # one measurement for all the reserves that hit this
                    if self.clock_syncs == syncs:
                        await self.sync_clock()
            if early or not explicit:
                if not explicit:
                    deadline = time.time() + self.reserve_timeout
                args[DEADLINE_ARG] = self._redis_ms(deadline)
                raw = await self._run_packed("reserve", keys, args, label)
        values = [int(x) for x in raw]
        spent, reserved, tokens, reserved_tokens = values[1:5]
        return ReserveOutcome(
            ReserveStatus(values[0]), spent, reserved, tokens, reserved_tokens, RateState(*values[5:10])
        )

    async def admit_rate(self, scope: str, limit: RateLimit, tokens: int) -> RateOutcome:
        """Admit one request of `tokens` into the rate window of `scope` (a model's limits, which
        span allocations: its own key, its own call)."""
        raw = await self._run("ratelimit", [scope], ["admit", *limit.args(), tokens])
        values = [int(x) for x in raw]
        status = ReserveStatus.RESERVED if values[0] == 1 else ReserveStatus(values[0])
        return RateOutcome(values[0] == 1, status, RateState(*values[1:6]), values[6])

    async def adjust_rate(self, scope: str, window_start: int, requests: int, tokens: int) -> None:
        """Give back requests/tokens to `scope`'s window that started at `window_start`, if current."""
        await self._run("ratelimit", [scope], ["adjust", window_start, requests, tokens])

    async def settle(
        self,
        alloc: Allocation,
        request_id: str,
        key: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost: int,
        label: KeyLabel | None = None,
        *,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> SettleOutcome:
        """Charge `cost` to the key `key` (the AIKey's uid; `label`: how reports show it).
        `input_tokens` counts every input token; `cached_tokens` (cache reads) and
        `cache_write_tokens` (cache writes) are the parts of it the usage records show apart."""
        now = self.now()
        k = alloc.keys
        w = window(alloc.period, now)
        args = [
            request_id,
            int(now.timestamp() * 1000),
            _amount(cost, "cost"),
            _amount(input_tokens, "input tokens"),
            _amount(output_tokens, "output tokens"),
            check_component(key, "key"),
            check_component(model, "model"),
            day_id(now),
            self.settled_ttl,
            self.retention,
            self._period_ttl(w, now),
            _amount(cached_tokens, "cached tokens"),
            _amount(cache_write_tokens, "cache write tokens"),
        ]
        keys = [k.period(w.id), k.leases, k.reservations, k.done(request_id), k.last_used]
        raw = await self._run_packed("settle", keys, args, label)
        return SettleOutcome(SettleStatus(int(raw[0])), int(raw[1]), int(raw[2]))

    async def release(self, alloc: Allocation, request_id: str) -> bool:
        """Give a reservation back (True), or find none (False). Idempotent. Either way the
        request id is then done: a later reserve of it is refused (ALREADY_SETTLED) and a later
        settle charges nothing (DUPLICATE)."""
        k = alloc.keys
        w = window(alloc.period, self.now())
        keys = [k.period(w.id), k.leases, k.reservations, k.done(request_id)]
        return bool(await self._run("release", keys, [request_id, self.settled_ttl]))

    async def extend(self, alloc: Allocation, request_id: str) -> bool:
        """Renew the lease of a live reservation (for long streams); False when it is gone."""
        return (await self.extend_many(alloc, [request_id]))[0]

    async def extend_many(self, alloc: Allocation, request_ids: Sequence[str]) -> list[bool]:
        """Renew the leases of several live reservations of one allocation in one script call:
        one flag per request id, False when that reservation is gone (settled, released, reaped)."""
        if not request_ids:
            return []
        k = alloc.keys
        w = window(alloc.period, self.now())
        expiry = int(self.clock() * 1000) + self.lease_ms
        raw = await self._run("extend", [k.period(w.id), k.leases, k.reservations], [expiry, *request_ids])
        return [bool(int(x)) for x in raw]

    async def restore(
        self,
        alloc: Allocation,
        period_id: str,
        spent: int,
        tokens: int,
        requests: int,
        key_spend: Mapping[str, int] | None = None,
    ) -> RestoreOutcome:
        """After Redis lost data: raise period `period_id`'s `spent` (nano-USD), `tokens` and
        `requests`, and each key's spend in it, to at least the given floors (the last status the
        operator wrote), in one atomic script call. Never lowers anything, so it is idempotent and
        safe while traffic goes on. `period_id` must be a period of the allocation's kind
        (`window(alloc.period, t).id`). A period past its retention is left alone."""
        w = _period_window(alloc.period, period_id)
        ttl = self._period_ttl(w, self.now())
        if w.end is not None and ttl <= 0:
            return RestoreOutcome(existed=False)
        args: list[Any] = [
            ttl,
            _amount(spent, "spent"),
            _amount(tokens, "tokens"),
            _amount(requests, "requests"),
        ]
        for key, floor in (key_spend or {}).items():
            args += [check_component(key, "key"), _amount(floor, f"spend of key {key}")]
        k = alloc.keys
        raw = await self._run("restore", [k.period(period_id), k.key_spend(period_id)], args)
        pairs = raw[4:]
        return RestoreOutcome(
            existed=bool(int(raw[0])),
            spent=int(raw[1]),
            tokens=int(raw[2]),
            requests=int(raw[3]),
            key_spend={str(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)},
        )

    # --- reading (operator status, usage reports) -----------------------------------------------

    async def period_state(self, alloc: Allocation, at: dt.datetime | None = None) -> PeriodState:
        w = window(alloc.period, at or self.now())
        raw: dict[str, str] = await _guarded(self.client.hgetall(alloc.keys.period(w.id)))  # type: ignore[arg-type]
        values = {k: int(v) for k, v in raw.items()}
        return PeriodState(**{f: values.get(f, 0) for f in _COUNTERS}, exists=bool(raw))

    async def usage(self, alloc: Allocation, days: list[str]) -> list[UsageRow]:
        """Usage records of the given UTC days (yyyymmdd), one row per day × key × model, each
        with its key's label when the ledger has one."""
        rows: list[UsageRow] = []
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(alloc.keys.usage(day))
        pipe.hgetall(alloc.keys.key_labels)
        results: list[dict[str, str]] = await _guarded(pipe.execute())
        labels = {key: KeyLabel.decode(raw) for key, raw in results.pop().items()}
        for day, raw in zip(days, results, strict=True):
            merged: dict[tuple[str, str], dict[str, int]] = {}
            for name, value in raw.items():
                key, model, what = name.rsplit("|", 2)
                merged.setdefault((key, model), {})[what] = int(value)
            for (key, model), v in sorted(merged.items()):
                rows.append(
                    UsageRow(
                        day,
                        key,
                        model,
                        v.get("req", 0),
                        v.get("in", 0),
                        v.get("out", 0),
                        v.get("cost", 0),
                        labels.get(key),
                        v.get("cin", 0),
                        v.get("cwr", 0),
                    )
                )
        return rows

    async def key_spend(self, alloc: Allocation, at: dt.datetime | None = None) -> dict[str, int]:
        """nano-USD charged to each key in the period containing `at` (default: now)."""
        w = window(alloc.period, at or self.now())
        raw: dict[str, str] = await _guarded(self.client.hgetall(alloc.keys.key_spend(w.id)))  # type: ignore[arg-type]
        return {k: int(v) for k, v in raw.items()}

    async def changes(
        self, allocs: Sequence[Allocation], at: dt.datetime | None = None, max_keys: int = 100_000
    ) -> list[Changes]:
        """Every allocation's period counters and the keys charged since the last call, in one
        pipelined round trip (HGETALL and SPOP per allocation; cluster-safe, nothing transactional
        across allocations). The keys are taken out of the ledger's `dirty` set: a caller that
        cannot use them now has to remember them itself."""
        if not allocs:
            return []
        at = at or self.now()
        pipe = self.client.pipeline(transaction=False)
        for alloc in allocs:
            pipe.hgetall(alloc.keys.period(window(alloc.period, at).id))
            pipe.spop(alloc.keys.dirty, max_keys)
        raw: list[Any] = await _guarded(pipe.execute())
        out = []
        for i in range(len(allocs)):
            counters: dict[str, str] = raw[2 * i] or {}
            values = {k: int(v) for k, v in counters.items()}
            state = PeriodState(**{f: values.get(f, 0) for f in _COUNTERS}, exists=bool(counters))
            out.append(Changes(state, tuple(raw[2 * i + 1] or ())))
        return out

    async def key_use(
        self, wanted: Sequence[tuple[Allocation, Sequence[str]]], at: dt.datetime | None = None
    ) -> list[dict[str, KeyUse]]:
        """Spend in the current period and last use of the given keys (AIKey uids) of each
        allocation, in one pipelined round trip (two HMGETs per allocation): work follows the keys
        asked for, not how many keys an allocation has."""
        at = at or self.now()
        pipe = self.client.pipeline(transaction=False)
        asked = [(alloc, list(names)) for alloc, names in wanted if names]
        for alloc, names in asked:
            pipe.hmget(alloc.keys.key_spend(window(alloc.period, at).id), names)
            pipe.hmget(alloc.keys.last_used, names)
        raw: list[Any] = await _guarded(pipe.execute()) if asked else []
        found: dict[int, dict[str, KeyUse]] = {}
        for i, (_alloc, names) in enumerate(asked):
            spend, used = raw[2 * i], raw[2 * i + 1]
            found[i] = {
                name: KeyUse(
                    int(s or 0), None if u is None else dt.datetime.fromtimestamp(int(u) / 1000, dt.UTC)
                )
                for name, s, u in zip(names, spend, used, strict=True)
            }
        it = iter(found.values())
        return [next(it) if names else {} for _alloc, names in wanted]

    async def last_used(self, alloc: Allocation) -> dict[str, dt.datetime]:
        raw: dict[str, str] = await _guarded(self.client.hgetall(alloc.keys.last_used))  # type: ignore[arg-type]
        return {k: dt.datetime.fromtimestamp(int(v) / 1000, dt.UTC) for k, v in raw.items()}

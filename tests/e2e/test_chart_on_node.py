"""charts/aikeys installed with Helm on the real node; users' clients through the Ingress.

Each test works in a namespace of its own (an AIProvider on the in-cluster mock upstream, an
Allocation, AIKeys applied with kubectl) and talks to the gateway pods the way users do: the
official OpenAI SDK against the Ingress URL.
"""

from __future__ import annotations

import base64
import errno
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aikeys_dev.devstack.cluster import CHART, MOCK_NAMESPACE

from aikeys.money import Price, parse_usd
from tests.e2e.conftest import E2E_TIMEOUT, Release, mock_call
from tests.integration.kube import apply_allocation, apply_provider, create_key, get, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]
MODEL = "gpt-4o-mini"
PRICE = ("0.15", "0.60")  # USD per million input, output tokens


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class Team:
    """A namespace with a provider on the mock upstream, an allocation and a key."""

    release: Release
    namespace: str
    key: str
    price: Price = field(default_factory=lambda: Price.parse(*PRICE))

    @property
    def model(self) -> str:
        return f"{self.namespace}:mock/{MODEL}"

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.release.openai_url, api_key=key or self.key, max_retries=0, timeout=30
        )

    def chat(self, text: str = "Hello there", **kw: Any) -> int:
        """One chat completion through the Ingress; returns what it costs (nano-USD)."""
        reply = self.client().chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": text}], max_tokens=16, **kw
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None
        return self.price.cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)

    def stream(self, text: str = "Hello there") -> tuple[str, int]:
        chunks = self.client().chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": text}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, cost = [], -1
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                cost = self.price.cost(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        assert cost >= 0, "the stream carried no usage"
        return "".join(parts), cost

    def allocation(self, name: str = "team") -> dict[str, Any]:
        obj = get(self.release.node.control_plane, "allocation", name, self.namespace)
        assert obj is not None
        return obj

    def spent(self, name: str = "team") -> int:
        return parse_usd((self.allocation(name).get("status") or {}).get("spent", "0"))

    def wait_spent(self, expected: int, timeout: float = 30) -> None:
        seen: list[int] = []

        def reached() -> bool:
            seen.append(self.spent())
            return seen[-1] == expected

        try:
            wait_for(reached, timeout, f"status.spent == {expected} nano-USD", interval=0.2)
        except AssertionError as err:
            raise AssertionError(f"{err}; last seen {seen[-1:]}, ledger {self.ledger()}") from None

    def ledger(self, name: str = "team") -> dict[str, str]:
        """The allocation's current period in Redis (via redis-cli in the Redis pod)."""
        prefix = f"aikeys:{{{self.namespace}/{name}}}:"
        keys = self.release.redis("--scan", "--pattern", f"{prefix}period:*").split()
        assert len(keys) == 1, keys
        flat = self.release.redis("hgetall", keys[0]).split("\n")
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def leases(self, name: str = "team") -> int:
        return int(self.release.redis("zcard", f"aikeys:{{{self.namespace}/{name}}}:leases"))


def make_team(release: Release, namespace: str, budget: str = "10", price: tuple[str, str] = PRICE) -> Team:
    cp = release.node.control_plane
    cp.kubectl("create", "namespace", namespace)
    apply_provider(cp, namespace, release.mock_url, {MODEL: price})
    apply_allocation(cp, namespace, "team", budget)
    key = create_key(cp, namespace, "alice", "team", "ttl: 720h")
    team = Team(release, namespace, key, Price.parse(*price))
    # every gateway replica knows the key before the test starts (the Ingress spreads requests)
    streak = [0]

    def known() -> bool:
        try:
            team.client().models.list()
            streak[0] += 1
        except openai.APIStatusError:
            streak[0] = 0
        return streak[0] >= 8

    wait_for(known, 30, "every gateway replica to know the key", interval=0.1)
    return team


def gateway_requests(release: Release, namespace: str) -> dict[str, float]:
    """Requests each gateway pod served for `namespace` (its own /metrics)."""
    script = (
        "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8080/metrics').read().decode())"
    )
    served = {}
    for pod in release.pods("gateway"):
        name = pod["metadata"]["name"]
        text = release.exec(name, "python", "-c", script).stdout
        served[name] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aikeys_requests_total{") and f'namespace="{namespace}"' in line
        )
    return served


# --- the release ------------------------------------------------------------------------------


def test_release_pods_ready_with_probes_read_only_and_non_root(release: Release) -> None:
    gateways, operators, redis = release.pods("gateway"), release.pods("operator"), release.pods("redis")
    assert (len(gateways), len(operators), len(redis)) == (2, 1, 1)
    for pod in [*gateways, *operators, *redis]:
        assert _ready(pod), pod["metadata"]["name"]
        [container] = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]
        assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"])
    assert all(g["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz" for g in gateways)
    # what the processes themselves see: the image's non-root user, a root filesystem they cannot write
    probe = "import os\ntry:\n    open('/probe', 'w')\nexcept OSError as e:\n    print(os.getuid(), e.errno)"
    for pod in [*gateways, *operators]:
        out = release.exec(pod["metadata"]["name"], "python", "-c", probe).stdout.split()
        assert out == ["10001", str(errno.EROFS)], (pod["metadata"]["name"], out)
    assert release.redis("ping") == "PONG"
    # the chart's fix for Redis images that keep protected mode on (Debian's): clients in other pods
    assert release.redis("config", "get", "protected-mode").split() == ["protected-mode", "no"]


def test_image_built_from_the_dockerfile_on_debians_python(release: Release) -> None:
    """The image's dependencies were resolved by its own interpreter (Debian's 3.11.2 needs
    async-timeout, which redis-py requires below 3.11.3) and `python` exists (helm test uses it)."""
    [gateway, *_] = release.pods("gateway")
    script = "import sys, async_timeout, redis; print(sys.version.split()[0], sys.prefix)"
    out = release.exec(gateway["metadata"]["name"], "python", "-c", script).stdout.split()
    assert out == ["3.11.2", "/opt/aikeys/venv"]
    dockerfile = (CHART.parents[1] / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim\n" in dockerfile  # users' builds keep the official base


def test_the_image_holds_no_dev_tools(release: Release) -> None:
    """What users run is the components: the dev stack and the mock upstream live in the dev tools'
    image only (the in-cluster mock runs from it), and the CLI in the image has no dev commands."""
    [gateway, *_] = release.pods("gateway")
    pod = gateway["metadata"]["name"]
    probe = release.exec(pod, "python", "-c", "import aikeys_dev", check=False)
    assert probe.returncode != 0 and "No module named 'aikeys_dev'" in probe.stderr
    assert "mock-upstream" not in release.exec(pod, "aikeys", "--help").stdout
    mock = json.loads(
        release.node.kubectl("get", "deployment", "mock-upstream", "-n", MOCK_NAMESPACE, "-o", "json").stdout
    )
    assert mock["spec"]["template"]["spec"]["containers"][0]["image"] == release.images.dev_ref


def test_helm_test_passes(release: Release) -> None:
    out = release.node.helm("test", release.name, "-n", release.namespace, "--timeout=120s").stdout
    assert "Phase:          Succeeded" in out, out


# --- a user's flow --------------------------------------------------------------------------


def test_aikey_flow_through_the_ingress(release: Release) -> None:
    team = make_team(release, "e2e-flow")
    secret = get(release.node.control_plane, "secret", "aikey-alice", team.namespace)
    assert secret is not None
    assert base64.b64decode(secret["data"]["OPENAI_BASE_URL"]).decode() == release.openai_url
    cost = team.chat()
    text, streamed = team.stream()
    assert text.startswith("Hello from the aikeys mock upstream")
    team.wait_spent(cost + streamed)
    key_status = wait_for(
        lambda: (
            (get(release.node.control_plane, "aikey", "alice", team.namespace) or {})
            .get("status", {})
            .get("spend")
        ),
        30,
        "the key's spend",
    )
    assert parse_usd(key_status) == cost + streamed
    models = [m.id for m in team.client().models.list()]
    assert team.model in models
    # usage through the Kubernetes API: the API server's aggregator reaches the gateway pods
    # through the chart's ClusterIP Service (APIService v1alpha1.usage.aikeys.dev)
    usage = json.loads(release.node.kubectl("get", "keyusages", "-n", team.namespace, "-o", "json").stdout)
    [alice] = [u for u in usage["items"] if u["metadata"]["name"] == "alice"]
    assert alice["usage"]["requests"] == 2
    assert parse_usd(alice["usage"]["cost"]) == cost + streamed


def test_exhausted_allocation_refuses_on_every_replica_without_overspend(release: Release) -> None:
    # about 0.02 USD a request against a 0.25 USD budget: a dozen requests fit
    team = make_team(release, "e2e-budget", budget="0.25", price=("1000", "1000"))
    costs: list[int] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def client_loop() -> None:
        while True:
            try:
                cost = team.chat("Spend it")
            except openai.APIStatusError as err:
                with lock:
                    refusals.append(f"{err.status_code} {err.code}")
                return
            with lock:
                costs.append(cost)

    threads = [threading.Thread(target=client_loop) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert refusals == ["402 insufficient_quota"] * 6
    assert len(costs) >= 5
    team.wait_spent(sum(costs))
    assert sum(costs) <= parse_usd("0.25")  # the ledger reserved before every call: no overspend
    status = team.allocation()["status"]
    assert parse_usd(status["remaining"]) == parse_usd("0.25") - sum(costs)
    assert parse_usd(status["reserved"]) == 0
    # the Ingress spread the load over both replicas, which share one ledger
    served = gateway_requests(release, team.namespace)
    assert len(served) == 2 and all(n > 0 for n in served.values()), served


# --- operations under load and failures ---------------------------------------------------------


@dataclass
class Traffic:
    """Steady traffic from several clients until stopped; every outcome is kept."""

    team: Team
    clients: int = 4
    ok: int = 0
    cost: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, streaming: bool) -> None:
        while not self.stop.is_set():
            try:
                cost = self.team.stream()[1] if streaming else self.team.chat()
            except Exception as err:
                with self.lock:
                    self.failures.append(f"{type(err).__name__}: {err}")
                continue
            with self.lock:
                self.ok += 1
                self.cost += cost

    def __enter__(self) -> Traffic:
        self.threads = [threading.Thread(target=self._run, args=(i == 0,)) for i in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.fixture
def steady(release: Release, request: pytest.FixtureRequest) -> Team:
    return make_team(release, f"e2e-{request.node.name.split('_')[1]}")


def test_rolling_restart_under_steady_traffic_fails_no_request(release: Release, steady: Team) -> None:
    before = {p["metadata"]["name"] for p in release.pods("gateway")}
    with Traffic(steady) as traffic:
        time.sleep(2)
        release.node.kubectl("rollout", "restart", "deployment/aikeys-gateway", "-n", release.namespace)
        release.node.kubectl(
            "rollout",
            "status",
            "deployment/aikeys-gateway",
            "-n",
            release.namespace,
            "--timeout=180s",
            timeout=200,
        )
        time.sleep(3)
    after = {p["metadata"]["name"] for p in release.pods("gateway")}
    assert before.isdisjoint(after) and len(after) == 2
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok >= 20
    steady.wait_spent(traffic.cost)  # every request charged exactly what the upstream counted
    wait_for(lambda: steady.ledger().get("reserved") == "0" and steady.leases() == 0, 30, "nothing reserved")


@dataclass
class LongStream:
    """A streamed chat in a thread of its own: what arrived, and the usage if the end did."""

    team: Team
    max_tokens: int
    pieces: int = 0
    usage: Any = None
    error: str = ""
    began: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> LongStream:
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            chunks = (
                self.team.client()
                .with_options(timeout=150)
                .chat.completions.create(
                    model=self.team.model,
                    messages=[{"role": "user", "content": "Tell me a long story"}],
                    max_tokens=self.max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.pieces += 1
                    self.began.set()
                if chunk.usage is not None:
                    self.usage = chunk.usage
        except Exception as err:  # a stream cut by its pod's shutdown ends here
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.began.set()


def test_rolling_restart_with_long_streams_in_flight_loses_and_overcharges_nothing(release: Release) -> None:
    """Two streams in flight while the gateway pods are replaced. The one shorter than the graceful
    period arrives whole; the one longer is cut at that bound, and its old pod reads its upstream on
    until the usage — not killed mid-drain, since terminationGracePeriodSeconds covers preStop +
    graceful + drain. Each is charged what it used, not its reservation, and nothing stays reserved
    (a killed pod would leave its lease for 10 minutes, then charge the whole reservation)."""
    team = make_team(release, "e2e-long-streams")
    [pod, *_] = release.pods("gateway")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 5 + 30 + 60 + 10
    mock_call(release, "PUT", "/_mock/config", {"reply_tokens": 180, "chunk_delay_ms": 500})
    try:
        short = LongStream(team, max_tokens=24).start()  # ~12 s: within the graceful 30 s
        long = LongStream(team, max_tokens=1000).start()  # 180 tokens, ~90 s: past it; reserves 1000
        assert short.began.wait(30) and long.began.wait(30)
        assert not short.error and not long.error, (short.error, long.error)
        release.node.kubectl("rollout", "restart", "deployment/aikeys-gateway", "-n", release.namespace)
        release.node.kubectl(
            "rollout", "status", "deployment/aikeys-gateway", "-n", release.namespace, "--timeout=180s",
            timeout=200,
        )  # fmt: skip
        for stream in (short, long):
            assert stream.thread is not None
            stream.thread.join(200)
    finally:
        mock_call(release, "PUT", "/_mock/config", {"reply_tokens": 16, "chunk_delay_ms": 0})
    assert short.error == "" and short.pieces > 0 and short.usage is not None, short
    assert short.usage.completion_tokens == 24
    assert long.usage is None, "the long stream was expected to outlast the graceful period"
    prompt = short.usage.prompt_tokens  # the same prompt
    expected = team.price.cost(prompt, 24) + team.price.cost(prompt, 180)
    team.wait_spent(expected, timeout=120)  # the long one's usage, read on by its old pod
    wait_for(lambda: team.ledger().get("reserved") == "0" and team.leases() == 0, 30, "nothing reserved")


def test_operator_pod_deleted_keys_keep_working_and_status_catches_up(release: Release, steady: Team) -> None:
    [old] = release.pods("operator")
    release.node.kubectl("delete", "pod", old["metadata"]["name"], "-n", release.namespace, "--wait=false")
    cost = steady.chat()  # the gateway needs no operator to serve a key
    new = wait_for(
        lambda: [
            p
            for p in release.pods("operator")
            if p["metadata"]["name"] != old["metadata"]["name"] and _ready(p)
        ],
        120,
        "a new operator pod",
    )
    assert len(new) == 1
    cost += steady.chat()
    steady.wait_spent(cost)
    bob = create_key(
        release.node.control_plane, steady.namespace, "bob", "team", "ttl: 720h"
    )  # minted by the new one
    assert bob.startswith("aik_")


def test_redis_pod_deleted_keeps_the_ledger(release: Release, steady: Team) -> None:
    cost = sum(steady.chat() for _ in range(3))
    steady.wait_spent(cost)
    spent_before = steady.ledger()["spent"]
    release.node.kubectl("delete", "pod", f"{release.name}-redis-0", "-n", release.namespace)
    wait_for(lambda: [p for p in release.pods("redis") if _ready(p)], 120, "Redis back")
    assert steady.ledger()["spent"] == spent_before  # from the AOF on its PersistentVolume, not restored

    def served() -> int | None:
        try:
            return steady.chat()
        except openai.APIStatusError:
            return None  # a gateway still reconnecting answers 503

    cost += wait_for(served, 60, "the gateway to serve again", interval=0.5)
    steady.wait_spent(cost)
    restored = json.loads(
        release.node.kubectl(
            "get", "events", "-n", steady.namespace, "--field-selector", "reason=LedgerRestored", "-o", "json"
        ).stdout
    )["items"]
    assert restored == []  # nothing was lost, so the operator had nothing to restore


# --- upgrade and uninstall (last: they change the session's release) ---------------------------


@pytest.mark.uninstalls
def test_helm_upgrade_then_uninstall_keeps_keys(release: Release) -> None:
    team = make_team(release, "e2e-upgrade")
    cost = team.chat()
    node = release.node
    values = node.workdir / f"values-{release.namespace}-{release.name}.yaml"
    node.helm(
        "upgrade", release.name, str(CHART), "-n", release.namespace, "-f", str(values),
        "--set", "gateway.replicas=3", "--set", "operator.statusInterval=2", "--wait", "--timeout=180s",
    )  # fmt: skip
    assert len([p for p in release.pods("gateway") if _ready(p)]) == 3
    env = {e["name"]: e.get("value") for e in release.pods("operator")[0]["spec"]["containers"][0]["env"]}
    assert env["AIKEYS_STATUS_INTERVAL"] == "2"
    cost += team.chat()
    team.wait_spent(cost)

    node.helm("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=120s")
    for kind in ("deployment", "statefulset"):
        out = node.kubectl("get", kind, "-n", release.namespace, "-o", "name").stdout
        assert out.strip() == "", out
    # as documented: CRDs, AIKeys, Allocations, AIProviders and key Secrets stay
    cp = node.control_plane
    assert get(cp, "aikey", "alice", team.namespace) is not None
    assert get(cp, "allocation", "team", team.namespace) is not None
    assert get(cp, "aiprovider", "mock", team.namespace) is not None
    assert get(cp, "secret", "aikey-alice", team.namespace) is not None
    assert node.kubectl("get", "crd", "aikeys.aikeys.dev", check=False).returncode == 0

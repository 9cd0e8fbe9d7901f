"""The gateway end to end: the official openai SDK → gateway → mock upstream, on the real
control plane, redis-server and operator."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from openai.types.chat import ChatCompletionMessageParam

from aikeys import keys as keyformat
from aikeys.estimate import Endpoint, input_tokens
from aikeys.ledger.store import Allocation, Ledger, PeriodState, connect
from aikeys.money import Price
from aikeys.periods import Period
from tests.integration.kube import (
    apply_allocation,
    apply_provider,
    create_key,
    create_provider_secret,
    gateway_knows,
    get,
    wait_for,
)

pytestmark = pytest.mark.integration
NS = "gw"
OTHER = "gw-other"
PRICE = Price.parse("1.00", "2.00")  # nano-USD: 1000 per input token, 2000 per output token
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, world!"}]
PROMPT = 3 + 3 + 4  # the mock's count: priming + framing + "Hello , world !"


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> dict[str, str]:
    for ns in (NS, OTHER):
        control_plane.kubectl("create", "namespace", ns)
    create_provider_secret(control_plane, NS, "mock-creds", "sk-upstream-secret")
    apply_provider(
        control_plane,
        NS,
        mock_upstream_process.url,
        {"gpt": ("1.00", "2.00"), "other": ("1.00", "2.00"), "emb": ("0.10", "0")},
        upstream_names={"gpt": "mock-gpt-upstream"},
        credentialsSecretRef={"name": "mock-creds"},
        sharedWith=[f"{OTHER}-shared"],
        timeout="2s",
    )
    apply_allocation(control_plane, NS, "main", "100.00")
    apply_allocation(control_plane, NS, "tiny", "0.0001")
    apply_allocation(control_plane, OTHER, "theirs", "100.00")
    keys = {
        "main": create_key(control_plane, NS, "user", "main"),
        "tiny": create_key(control_plane, NS, "poor", "tiny"),
        "limited": create_key(control_plane, NS, "limited", "main", f'models: ["{NS}:mock/other"]'),
        "outsider": create_key(control_plane, OTHER, "outsider", "theirs"),
    }
    # the operator projects the provider's credentials for the gateway
    wait_for(
        lambda: (
            f"{NS}.mock"
            in (get(control_plane, "secret", "aikeys-provider-credentials", "aikeys-system") or {}).get(
                "data", {}
            )
        ),
        30,
        "credentials projected",
    )
    for key in keys.values():
        gateway_knows(gateway.openai_url, key)
    return keys


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0)


def state(redis_server: RedisServer, name: str, budget: int = 100 * 10**9) -> PeriodState:
    async def read() -> PeriodState:
        c = connect(redis_server.url)
        try:
            return await Ledger(c).period_state(Allocation(NS, name, budget, Period.MONTHLY))
        finally:
            await c.aclose()

    return asyncio.run(read())


def settled(redis_server: RedisServer, name: str, requests: int) -> PeriodState:
    def done() -> PeriodState | None:
        s = state(redis_server, name)
        return s if s.requests >= requests and s.reserved == 0 else None

    return wait_for(done, 5, f"{requests} settled requests")


def post(
    gateway: GatewayProcess, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(gateway.openai_url + path, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status), dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


# --- happy paths with the official SDK ------------------------------------------------------------------


def test_chat_completion(
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = state(redis_server, "main")
    raw = client(gateway, world["main"]).chat.completions.with_raw_response.create(
        model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=5
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from the aikeys mock"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        PROMPT,
        5,
    )
    assert len(raw.headers["x-request-id"]) == 32
    [seen] = mock_upstream.requests()
    assert seen["body"]["model"] == "mock-gpt-upstream"  # the provider's name for it
    assert seen["headers"]["Authorization"] == "Bearer sk-upstream-secret"  # never the client's key
    assert world["main"] not in json.dumps(seen)
    assert seen["body"]["messages"] == MESSAGES and seen["body"]["max_tokens"] == 5
    after = settled(redis_server, "main", before.requests + 1)
    assert after.spent - before.spent == PRICE.cost(PROMPT, 5)
    assert after.tokens - before.tokens == PROMPT + 5


def test_stream_with_usage(gateway: GatewayProcess, world: dict[str, str], redis_server: RedisServer) -> None:
    before = state(redis_server, "main")
    chunks = list(
        client(gateway, world["main"]).chat.completions.create(
            model=f"{NS}:mock/gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello from")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    after = settled(redis_server, "main", before.requests + 1)
    assert after.spent - before.spent == PRICE.cost(PROMPT, 16)


def test_stream_without_usage_is_metered_but_hides_the_usage_chunk(
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = state(redis_server, "main")
    chunks = list(
        client(gateway, world["main"]).chat.completions.create(
            model=f"{NS}:mock/gpt", messages=MESSAGES, stream=True
        )
    )
    assert all(c.choices for c in chunks)  # no usage-only chunk: the client did not ask for one
    [seen] = mock_upstream.requests()
    assert seen["body"]["stream_options"] == {"include_usage": True}  # we asked the upstream ourselves
    after = settled(redis_server, "main", before.requests + 1)
    assert after.spent - before.spent == PRICE.cost(PROMPT, 16)


def test_answers_and_streams_keep_the_upstream_connection_alive(
    gateway: GatewayProcess, world: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    """One after the other, whole answers and streams (read to their end) travel over the same
    kept-alive upstream connection: no TCP (or TLS) handshake per request."""
    c = client(gateway, world["main"])
    for _ in range(3):
        c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=3)
        list(c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, stream=True))
    peers = [r["peer"] for r in mock_upstream.requests()]
    assert len(peers) == 6 and len(set(peers)) == 1, peers


def test_completions_embeddings_and_models(
    gateway: GatewayProcess, world: dict[str, str], redis_server: RedisServer
) -> None:
    c = client(gateway, world["main"])
    done = c.completions.create(model=f"{NS}:mock/gpt", prompt="Say hi", max_tokens=3)
    assert done.choices[0].text == "Hello from the"
    emb = c.embeddings.create(model=f"{NS}:mock/emb", input=["one two", "three"])
    assert len(emb.data) == 2
    assert len(emb.data[0].embedding) == 1536
    assert [m.id for m in c.models.list()] == [f"{NS}:mock/emb", f"{NS}:mock/gpt", f"{NS}:mock/other"]
    assert [m.id for m in client(gateway, world["limited"]).models.list()] == [f"{NS}:mock/other"]
    assert list(client(gateway, world["outsider"]).models.list()) == []


# --- budgets --------------------------------------------------------------------------------------------


def test_exhausted_budget_is_402_before_the_upstream(
    gateway: GatewayProcess, world: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        client(gateway, world["tiny"]).chat.completions.create(
            model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=100
        )
    assert refused.value.status_code == 402
    assert refused.value.response.headers["x-should-retry"] == "false"
    body = refused.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "0.0001 USD left" in body["message"]
    assert mock_upstream.requests() == []  # the model was never called


# --- who may call what ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", ["", "sk-notours", "aik_" + "x" * 49, keyformat.mint()])
def test_bad_keys_are_401(gateway: GatewayProcess, world: dict[str, str], bad_key: str) -> None:
    headers = {"Content-Type": "application/json"}
    if bad_key:
        headers["Authorization"] = f"Bearer {bad_key}"
    status, _, body = post(
        gateway,
        "/chat/completions",
        json.dumps({"model": f"{NS}:mock/gpt", "messages": MESSAGES}).encode(),
        headers,
    )
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("header", ["api-key", "x-api-key"])
def test_alternative_key_headers(gateway: GatewayProcess, world: dict[str, str], header: str) -> None:
    status, _, body = post(
        gateway,
        "/chat/completions",
        json.dumps({"model": f"{NS}:mock/gpt", "messages": MESSAGES, "max_tokens": 2}).encode(),
        {"Content-Type": "application/json", header: world["main"]},
    )
    assert status == 200, body


def test_models_a_key_may_not_use_answer_like_models_that_do_not_exist(
    gateway: GatewayProcess, world: dict[str, str]
) -> None:
    def refusal(key: str, model: str) -> Any:
        with pytest.raises(openai.NotFoundError) as refused:
            client(gateway, key).chat.completions.create(model=model, messages=MESSAGES)
        return refused.value.body

    missing = refusal(world["main"], f"{NS}:mock/nope")
    not_listed = refusal(world["limited"], f"{NS}:mock/gpt")  # outside the key's spec.models
    not_shared = refusal(world["outsider"], f"{NS}:mock/gpt")  # provider not shared with its namespace
    for body in (not_listed, not_shared):
        assert isinstance(body, dict)
        assert body["code"] == missing["code"] == "model_not_found"
        assert body["message"] == missing["message"].replace("nope", "gpt")
    assert (
        client(gateway, world["limited"])
        .chat.completions.create(model=f"{NS}:mock/other", messages=MESSAGES, max_tokens=1)
        .choices
    )


def test_unknown_models_are_404(gateway: GatewayProcess, world: dict[str, str]) -> None:
    for model in ("gpt-4o", f"{NS}:mock/nope", f"{NS}:nobody/gpt"):
        with pytest.raises(openai.NotFoundError) as missing:
            client(gateway, world["main"]).chat.completions.create(model=model, messages=MESSAGES)
        assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"


def test_revocations_take_effect_within_a_second(
    control_plane: ControlPlane, gateway: GatewayProcess, world: dict[str, str]
) -> None:
    doomed = create_key(control_plane, NS, "doomed", "main")
    paused = create_key(control_plane, NS, "paused", "main")
    short = create_key(control_plane, NS, "short", "main", "ttl: 3s")
    for key in (doomed, paused, short):
        gateway_knows(gateway.openai_url, key)

    def refused(key: str) -> bool:
        try:
            client(gateway, key).models.list()
        except openai.AuthenticationError:
            return True
        return False

    started = time.monotonic()
    control_plane.kubectl("delete", "aikey", "doomed", "-n", NS, "--wait=false")
    wait_for(lambda: refused(doomed), 1.0, "the deleted key to be refused")
    control_plane.kubectl(
        "patch", "aikey", "paused", "-n", NS, "--type=merge", "-p", '{"spec":{"disabled":true}}'
    )
    wait_for(lambda: refused(paused), 1.0, "the disabled key to be refused")
    print(f"\nrevocations applied in {time.monotonic() - started:.2f}s (two kubectl calls included)")
    expires = json.loads(control_plane.kubectl("get", "aikey", "short", "-n", NS, "-o", "json").stdout)[
        "status"
    ]["expiresAt"]
    wait = (dt.datetime.fromisoformat(expires) - dt.datetime.now(dt.UTC)).total_seconds()
    time.sleep(max(wait, 0) + 0.05)
    assert refused(short)  # the gateway checks the timestamp itself: no waiting for the operator


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"model": f"{NS}:mock/gpt"}).encode(), 400, "messages"),
        (json.dumps({"model": f"{NS}:mock/gpt", "messages": "hi"}).encode(), 400, "messages"),
        (
            json.dumps({"model": f"{NS}:mock/gpt", "messages": MESSAGES, "stream": "yes"}).encode(),
            400,
            "stream",
        ),
        (
            json.dumps({"model": f"{NS}:mock/gpt", "messages": MESSAGES, "max_tokens": -1}).encode(),
            400,
            "max_tokens",
        ),
        (json.dumps({"messages": MESSAGES}).encode(), 400, "model"),
        (b"x" * (1024 * 1024 + 1), 413, None),
    ],
)
def test_malformed_requests_are_4xx_with_the_field(
    gateway: GatewayProcess, world: dict[str, str], body: bytes, status: int, param: str | None
) -> None:
    got, headers, answer = post(
        gateway,
        "/chat/completions",
        body,
        {"Content-Type": "application/json", "Authorization": f"Bearer {world['main']}"},
    )
    assert got == status
    assert answer["error"]["param"] == param
    assert headers["x-request-id"]


def test_unknown_paths_and_methods_are_openai_shaped(gateway: GatewayProcess) -> None:
    status, _, body = post(gateway, "/assistants", b"{}", {"Content-Type": "application/json"})
    assert status == 404
    assert body["error"]["code"] == "unknown_url"


def test_request_id_is_echoed(gateway: GatewayProcess, world: dict[str, str]) -> None:
    _, headers, _ = post(
        gateway,
        "/chat/completions",
        json.dumps({"model": f"{NS}:mock/gpt", "messages": MESSAGES, "max_tokens": 1}).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {world['main']}",
            "x-request-id": "trace-42",
        },
    )
    assert headers["x-request-id"] == "trace-42"


# --- failures ---------------------------------------------------------------------------------------------


def leave_mid_stream(gateway: GatewayProcess, key: str, events: int, **extra: Any) -> None:
    """Start a streamed chat on a raw socket and hang up after `events` SSE events."""
    body = json.dumps({"model": f"{NS}:mock/gpt", "messages": MESSAGES, "stream": True, **extra}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /api/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data: ") < events:
            received += sock.recv(65536)


def test_a_client_leaving_mid_stream_does_not_stop_the_count(
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    # the upstream goes on generating after the client hangs up, and bills all of it
    mock_upstream.configure(reply_tokens=60, chunk_delay_ms=15)
    before = state(redis_server, "main")
    leave_mid_stream(gateway, world["main"], 11)  # role + 10 words
    after = settled(redis_server, "main", before.requests + 1)
    assert after.tokens - before.tokens == PROMPT + 60  # the upstream's own usage, read after the client left
    assert after.spent - before.spent == PRICE.cost(PROMPT, 60)
    assert len(mock_upstream.requests()) == 1


def test_upstream_error_releases_the_reservation(
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = state(redis_server, "main")
    mock_upstream.configure(fail_status=500, fail_count=1)
    with pytest.raises(openai.InternalServerError) as failed:
        client(gateway, world["main"]).chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES)
    assert isinstance(failed.value.body, dict) and "Injected failure" in failed.value.body["message"]
    after = state(redis_server, "main")
    assert (after.spent, after.requests, after.reserved) == (before.spent, before.requests, 0)


def test_upstream_timeout_after_the_request_left_is_504_and_charged_its_bound(
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    """The upstream had the request and may be generating it (and billing it): a sent request is
    never simply released (issue 21, #2). It was: 504 and nothing charged."""
    before = state(redis_server, "main")
    mock_upstream.configure(latency_ms=3000)  # the provider's timeout is 2s
    with pytest.raises(openai.APIStatusError) as slow:
        client(gateway, world["main"]).chat.completions.create(
            model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=7
        )
    assert slow.value.status_code == 504
    assert len(mock_upstream.requests()) == 1
    bound_in = input_tokens(Endpoint.CHAT, {"messages": MESSAGES}, None)
    after = settled(redis_server, "main", before.requests + 1)
    assert (after.spent - before.spent, after.reserved) == (PRICE.cost(bound_in, 7), 0)


def test_secrets_stay_out_of_logs(
    gateway: GatewayProcess, world: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    client(gateway, world["main"]).chat.completions.create(
        model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=1
    )
    log = gateway.log()
    assert world["main"] not in log
    assert "sk-upstream-secret" not in log
    assert "Hello, world!" not in log  # no prompts either
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry.get("message") == "request" and entry.get("key") == "user"]
    assert access and {"rid", "status", "model", "ms", "namespace"} <= set(access[-1])


# --- provider kinds -----------------------------------------------------------------------------------------


def test_azure_openai_deployment_and_api_version(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    mock_upstream_process: MockUpstreamProcess,
) -> None:
    create_provider_secret(control_plane, NS, "azure-creds", "az-secret")
    root = mock_upstream_process.url.removesuffix("/v1")
    apply_provider(
        control_plane,
        NS,
        root,
        {"gpt4o": ("1.00", "2.00")},
        name="azure",
        type="azure-openai",
        azure={"apiVersion": "2024-10-21"},
        credentialsSecretRef={"name": "azure-creds"},
    )
    wait_for(
        lambda: (
            f"{NS}.azure"
            in (get(control_plane, "secret", "aikeys-provider-credentials", "aikeys-system") or {}).get(
                "data", {}
            )
        ),
        30,
        "azure credentials projected",
    )

    def served() -> bool:
        try:
            client(gateway, world["main"]).chat.completions.create(
                model=f"{NS}:azure/gpt4o", messages=MESSAGES, max_tokens=2
            )
        except openai.APIStatusError:
            return False
        return True

    wait_for(served, 10, "the Azure provider to be served")
    seen = mock_upstream.requests()[-1]
    assert seen["path"] == "/openai/deployments/gpt4o/chat/completions"  # the deployment is the model's name
    assert seen["query"] == {"api-version": "2024-10-21"}
    assert seen["headers"]["api-key"] == "az-secret"
    assert "Authorization" not in seen["headers"]


def test_stream_usage_switch_off_counts_the_streamed_text(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    world: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    mock_upstream_process: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    apply_provider(
        control_plane,
        NS,
        mock_upstream_process.url,
        {"plain": ("1.00", "2.00")},
        name="strict",
        streamUsage=False,
    )
    mock_upstream.configure(reject_stream_options=True)  # a backend that refuses stream_options

    def streamed() -> list[str] | None:
        try:
            chunks = client(gateway, world["main"]).chat.completions.create(
                model=f"{NS}:strict/plain", messages=MESSAGES, stream=True
            )
            return [c.choices[0].delta.content or "" for c in chunks if c.choices]
        except openai.APIStatusError:
            return None

    before = state(redis_server, "main")
    pieces = wait_for(streamed, 10, "the strict provider to be served")
    assert "stream_options" not in mock_upstream.requests()[-1]["body"]
    after = settled(redis_server, "main", before.requests + 1)
    text = "".join(pieces)
    counted = max(len(text.encode()), sum(1 for p in pieces if p))  # not OpenAI itself: the byte bound
    estimate_input = after.tokens - before.tokens - counted
    assert (
        estimate_input >= PROMPT
    )  # input charged at its bound (no usage came back), output counted from text
    assert after.spent - before.spent == PRICE.cost(estimate_input, counted)


# --- answers too large to take ----------------------------------------------------------------------------

MiB = 1024 * 1024


class HugeAnswers(http.server.BaseHTTPRequestHandler):
    """An upstream whose answer never fits: 200 MB of JSON, or a stream whose first event is 32 MB
    with no blank line; made as it is sent, it stops when the gateway hangs up."""

    server: HugeServer

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stream = bool(request.get("stream"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
        self.end_headers()  # HTTP/1.0: the body ends when the connection does
        head = (
            b'data: {"choices":[{"index":0,"delta":{"content":"'
            if stream
            else b'{"choices":[{"message":{"content":"'
        )
        size = (32 if stream else 200) * MiB
        piece = b"x" * (64 * 1024)
        sent = 0
        try:
            self.wfile.write(head)
            while sent < size:
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.write(b'"}}]}\n\n' if stream else b'"}}]}')
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.server.sent["stream" if stream else "json"] = sent

    def log_message(self, *args: Any) -> None:
        pass


class HugeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    sent: dict[str, int]  # bytes of the body sent, by the last answer of each kind once it is over

    def sent_once_over(self, kind: str) -> int:
        wait_for(lambda: kind in self.sent, 10, f"the {kind} answer to be over")
        return self.sent[kind]


@pytest.fixture(scope="module")
def huge_upstream(control_plane: ControlPlane, world: dict[str, str]) -> Iterator[HugeServer]:
    server = HugeServer(("127.0.0.1", 0), HugeAnswers)
    server.sent = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    apply_provider(
        control_plane,
        NS,
        f"http://127.0.0.1:{server.server_address[1]}",
        {"m": ("1.00", "2.00")},
        name="huge",
    )
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def peak_rss_while(pid: int, run: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    """What `run` returns, and the process's highest resident memory meanwhile (sampled)."""
    peak, done = [rss(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return run(), max(peak)
    finally:
        done.set()
        sampler.join()


def test_a_json_answer_past_the_cap_is_a_502_and_the_gateway_stays_small(
    gateway: GatewayProcess, world: dict[str, str], huge_upstream: HugeServer, redis_server: RedisServer
) -> None:
    assert gateway.child is not None
    body = {"model": f"{NS}:huge/m", "messages": MESSAGES, "max_tokens": 5}

    def served() -> httpx.Response | None:
        reply = httpx.post(
            f"{gateway.openai_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {world['main']}"},
            timeout=60,
        )
        return None if reply.status_code == 404 else reply  # until the gateway knows the provider

    wait_for(lambda: served() is not None, 10, "the huge provider to be served")
    before, baseline = state(redis_server, "main"), rss(gateway.child.pid)
    huge_upstream.sent.clear()
    reply, peak = peak_rss_while(gateway.child.pid, lambda: served() or httpx.Response(0))
    print(f"\n200 MB answer: gateway RSS {baseline / MiB:.0f} → peak {peak / MiB:.0f} MiB")
    assert reply.status_code == 502
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_too_large")
    assert str(64 * MiB) in error["message"]
    assert peak - baseline < 160 * MiB  # the 64 MiB cap and what is in flight, not 200 MB (or 3×)
    assert huge_upstream.sent_once_over("json") < 100 * MiB  # the connection was dropped: the rest never sent
    settled(redis_server, "main", before.requests + 1)  # the sent request is settled, nothing held


def test_a_stream_event_past_the_cap_ends_the_stream_with_an_error(
    gateway: GatewayProcess, world: dict[str, str], huge_upstream: HugeServer, redis_server: RedisServer
) -> None:
    wait_for(
        lambda: (
            httpx.post(
                f"{gateway.openai_url}/chat/completions",
                json={"model": f"{NS}:huge/m", "messages": "not a list"},
                headers={"Authorization": f"Bearer {world['main']}"},
            ).status_code
            == 400
        ),
        10,
        "the huge provider to be served",
    )
    before = state(redis_server, "main")
    huge_upstream.sent.clear()
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{gateway.openai_url}/chat/completions",
        json={"model": f"{NS}:huge/m", "messages": MESSAGES, "max_tokens": 5, "stream": True},
        headers={"Authorization": f"Bearer {world['main']}"},
        timeout=60,
    ) as reply:
        assert reply.status_code == 200  # the stream had begun: its end says why
        received = reply.read()
    assert len(received) < MiB  # nothing of the 32 MB event was forwarded
    last = json.loads(received.strip().split(b"\n\n")[-1].removeprefix(b"data: "))
    assert (last["error"]["code"], last["error"]["type"]) == ("upstream_too_large", "upstream_error")
    assert str(8 * MiB) in last["error"]["message"]
    assert time.monotonic() - started < 10
    assert huge_upstream.sent_once_over("stream") < 32 * MiB  # dropped once the cap was passed
    settled(redis_server, "main", before.requests + 1)

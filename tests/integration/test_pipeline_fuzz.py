"""The promise, generated (issue 21): requests built from the OpenAI request shapes — chat,
completions, embeddings and Responses (native and translated), with previous_response_id, files,
refusals, images, audio, tools of every kind, and fields of the wrong type — sent through the
real gateway to a mock upstream that bills what it generates and sometimes answers late, cuts the
connection, breaks a stream or fails. After every request and at the end:

* the gateway never fails on its own (a 5xx only passes on an upstream that misbehaved), and
  every error is OpenAI's shape;
* spent + reserved never exceed a budget;
* every generation the upstream billed is charged at least what it billed;
* nothing is held when the run ends.

`make test` runs a bounded, seeded number of examples; `make fuzz` many more
(AIKEYS_FUZZ_EXAMPLES)."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import httpx
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from aikeys.ledger.store import PeriodState
from aikeys.money import NANO_PER_USD, Price
from tests.integration.kube import apply, apply_allocation, create_key, gateway_knows, wait_for
from tests.integration.ledgers import period_state

pytestmark = pytest.mark.integration
NS = "fz"
EXAMPLES = int(os.environ.get("AIKEYS_FUZZ_EXAMPLES", "100"))
BUDGETS = {"rich": "1000.00", "poor": "0.02"}
USD = {"chat": ("1.00", "2.00"), "chat2": ("3.00", "6.00"), "native": ("1.00", "2.00")}
PRICES = {name: Price.parse(*usd) for name, usd in USD.items()}  # upstream model → what it bills
MODELS = [f"{NS}:up/chat", f"{NS}:up/native", f"{NS}:up/fb", f"{NS}:up2/chat"]


def model(name: str, price: str, **extra: Any) -> dict[str, Any]:
    pin, pout = USD[price]
    return {"name": name, "inputPricePerMillion": pin, "outputPricePerMillion": pout, **extra}


@pytest.fixture(scope="module")
def keys(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> dict[str, str]:
    cp, url = control_plane, mock_upstream_process.url
    cp.kubectl("create", "namespace", NS)
    providers = {
        "up": [
            model("chat", "chat"),
            model("native", "native", responsesAPI="native", contextWindow=200_000),
            model("fb", "chat", upstreamName="chat", backends=[{"model": f"{NS}:up2/chat", "weight": 0}]),
        ],
        "up2": [model("chat", "chat2", upstreamName="chat2")],
    }
    for name, models in providers.items():
        body = {"baseURL": url, "timeout": "1s", "models": models}
        manifest = {"apiVersion": "aikeys.dev/v1alpha1", "kind": "AIProvider", "metadata": {"name": name}}
        apply(cp, json.dumps({**manifest, "spec": body}), NS)
    found = {}
    for name, budget in BUDGETS.items():
        apply_allocation(cp, NS, name, budget)
        found[name] = create_key(cp, NS, name, name)
        gateway_knows(gateway.openai_url, found[name])
    return found


def state(redis_server: RedisServer, name: str) -> PeriodState:
    return period_state(redis_server, NS, name)


def settled(redis_server: RedisServer) -> dict[str, PeriodState] | None:
    """Every allocation's state once nothing is held any more."""
    now = {name: state(redis_server, name) for name in BUDGETS}
    return now if all(s.reserved == 0 for s in now.values()) else None


def billed(entries: list[dict[str, Any]]) -> int:
    """What the upstream billed for these requests, in nano-USD at its own prices."""
    total = 0
    for entry in entries:
        if "billed" in entry:
            price, bill = PRICES[entry["body"]["model"]], entry["billed"]
            cached = bill.get("cached", 0)  # inside input, as OpenAI counts it
            total += price.cost(bill["input"] - cached, bill["output"], cached)
    return total


# --- the request shapes ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
TEXT = st.text(max_size=60)
DATA = st.binary(max_size=3000).map(lambda b: base64.b64encode(b).decode())
SCHEMA = st.just({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})

CHAT_PARTS = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, TEXT),
    st.builds(lambda d: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{d}"}}, DATA),
    st.builds(lambda t: {"type": "refusal", "refusal": t}, TEXT),
    st.builds(lambda d: {"type": "file", "file": {"file_data": d, "filename": "a.pdf"}}, DATA),
    st.builds(lambda d: {"type": "input_audio", "input_audio": {"data": d, "format": "wav"}}, DATA),
    st.builds(lambda t, v: {"type": t, "payload": v}, st.sampled_from(["future_part", "video"]), JSON),
)
TOOL_CALLS = st.lists(
    st.builds(
        lambda n, a: {"id": "call_1", "type": "function", "function": {"name": n, "arguments": a}},
        st.sampled_from(["get_weather", "lookup"]),
        TEXT,
    ),
    max_size=2,
)
MESSAGES = st.lists(
    st.one_of(
        st.builds(lambda c: {"role": "user", "content": c}, TEXT | st.lists(CHAT_PARTS, max_size=3)),
        st.builds(lambda c: {"role": "system", "content": c}, TEXT),
        st.builds(
            lambda c, calls: {"role": "assistant", "content": c, **({"tool_calls": calls} if calls else {})},
            TEXT | st.lists(CHAT_PARTS, max_size=2) | st.none(),
            TOOL_CALLS,
        ),
        st.builds(lambda t: {"role": "tool", "tool_call_id": "call_1", "content": t}, TEXT),
    ),
    min_size=1,
    max_size=4,
)
CHAT_TOOLS = st.lists(
    st.one_of(
        st.builds(
            lambda n, p: {"type": "function", "function": {"name": n, "parameters": p}},
            st.sampled_from(["get_weather", "lookup"]),
            SCHEMA,
        ),
        st.builds(lambda n: {"type": "custom", "custom": {"name": n}}, st.sampled_from(["grep"])),
    ),
    max_size=2,
)
CAP = st.integers(1, 300)
CHAT = st.fixed_dictionaries(
    {"messages": MESSAGES},
    optional={
        "max_tokens": CAP,
        "max_completion_tokens": CAP,
        "n": st.integers(1, 3),
        "stream": st.booleans(),
        "stream_options": st.just({"include_usage": True}),
        "tools": CHAT_TOOLS,
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "response_format": st.one_of(
            st.just({"type": "json_object"}),
            SCHEMA.map(lambda s: {"type": "json_schema", "json_schema": {"name": "w", "schema": s}}),
        ),
        "temperature": st.floats(0, 2),
        "user": TEXT,
    },
)
COMPLETIONS = st.fixed_dictionaries(
    {"prompt": TEXT | st.lists(TEXT, min_size=1, max_size=3) | st.lists(st.integers(0, 50_000), max_size=20)},
    optional={
        "max_tokens": CAP,
        "n": st.integers(1, 3),
        "best_of": st.integers(1, 3),
        "stream": st.booleans(),
        "suffix": TEXT,
    },
)
EMBEDDINGS = st.fixed_dictionaries(
    {"input": TEXT.filter(bool) | st.lists(TEXT.filter(bool), min_size=1, max_size=3)},
    optional={"dimensions": st.integers(1, 64)},
)
INPUT_PARTS = st.one_of(
    st.builds(lambda t: {"type": "input_text", "text": t}, TEXT),
    st.builds(lambda d: {"type": "input_image", "image_url": f"data:image/png;base64,{d}"}, DATA),
    st.builds(
        lambda d: {
            "type": "input_file",
            "filename": "a.pdf",
            "file_data": f"data:application/pdf;base64,{d}",
        },
        DATA,
    ),
)
ITEMS = st.lists(
    st.one_of(
        st.builds(
            lambda c: {"role": "user", "content": c}, TEXT | st.lists(INPUT_PARTS, min_size=1, max_size=3)
        ),
        st.builds(
            lambda a: {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": a}, TEXT
        ),
        st.builds(lambda o: {"type": "function_call_output", "call_id": "c1", "output": o}, TEXT),
    ),
    min_size=1,
    max_size=4,
)
RESPONSES_TOOLS = st.lists(
    st.one_of(
        SCHEMA.map(lambda s: {"type": "function", "name": "get_weather", "parameters": s}),
        SCHEMA.map(
            lambda s: {
                "type": "namespace",
                "name": "files",
                "tools": [{"type": "function", "name": "read", "parameters": s}],
            }
        ),
        st.just({"type": "web_search"}),
    ),
    max_size=2,
)
RESPONSES = st.fixed_dictionaries(
    {"input": TEXT | ITEMS},
    optional={
        "instructions": TEXT,
        "max_output_tokens": st.integers(16, 300),
        "stream": st.booleans(),
        "store": st.booleans(),
        "tools": RESPONSES_TOOLS,
        "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(["low", "medium", "high"])}),
        "text": SCHEMA.map(lambda s: {"format": {"type": "json_schema", "name": "w", "schema": s}}),
        "previous_response_id": st.just("from-the-pool"),
    },
)
SHAPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "chat/completions": CHAT,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
    "responses": RESPONSES,
}
# what the upstream does to the first attempt
FAULTS = st.sampled_from(
    [{}] * 6
    + [
        {"late_ms": 1300.0, "fault_count": 1},  # generates, answers after the provider's 1 s timeout
        {"reset": True, "fault_count": 1},  # generates, cuts the connection unanswered
        {"break_after_chunks": 1},  # a stream broken after its first chunk
        {"fail_status": 500, "fail_count": 1},
        {"fail_status": 429, "fail_count": 1},
    ]
)
# a field of the wrong type, anywhere at the top (every surface must answer 4xx, never 5xx)
SPOIL = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(
            [
                "messages",
                "tools",
                "reasoning",
                "input",
                "n",
                "stream",
                "max_tokens",
                "tool_choice",
                "text",
                "prompt",
            ]
        ),
        JSON,
    ),
)

MOCK_FAULT_FIELDS = ("late_ms", "reset", "fault_count", "break_after_chunks", "fail_status", "fail_count")
CLEAN = {
    "late_ms": 0.0,
    "reset": False,
    "fault_count": None,
    "break_after_chunks": None,
    "fail_status": None,
    "fail_count": None,
}


def test_generated_requests_keep_the_promise(
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = {name: state(redis_server, name) for name in BUDGETS}
    last = dict(before)
    seen = [0]  # mock log entries already accounted for
    stored: list[str] = []
    statuses: list[int] = []
    with httpx.Client(timeout=30) as http:

        @seed(21)
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(
            endpoint=st.sampled_from(list(SHAPES)),
            data=st.data(),
            model_id=st.sampled_from(MODELS),
            who=st.sampled_from(["rich", "rich", "rich", "poor"]),
            fault=FAULTS,
            spoil=SPOIL,
        )
        def one(
            endpoint: str,
            data: st.DataObject,
            model_id: str,
            who: str,
            fault: dict[str, Any],
            spoil: tuple[str, Any] | None,
        ) -> None:
            body: dict[str, Any] = {"model": model_id, **data.draw(SHAPES[endpoint])}
            if body.get("previous_response_id") == "from-the-pool":
                body["previous_response_id"] = stored[-1] if stored else "resp_unknown"
            if spoil is not None:
                body[spoil[0]] = spoil[1]
            mock_upstream.configure(**{**CLEAN, **fault})
            reply = http.post(
                f"{gateway.openai_url}/{endpoint}",
                json=body,
                headers={"Authorization": f"Bearer {keys[who]}"},
            )
            reply.read()
            statuses.append(reply.status_code)
            # 5xx only from an upstream that misbehaved (passed on, or 502/504), never our own
            own_failure = "failed unexpectedly" in reply.text
            assert not own_failure and (reply.status_code < 500 or bool(fault)), (
                endpoint,
                body,
                fault,
                reply.status_code,
                reply.text[:500],
            )
            if reply.status_code >= 400:
                assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
            elif endpoint == "responses" and not body.get("stream") and body.get("store") is not False:
                stored.append(reply.json()["id"])
            for name, budget in BUDGETS.items():  # at every moment, inside every budget
                s = state(redis_server, name)
                assert s.spent + s.reserved <= int(float(budget) * NANO_PER_USD), (name, s)
            # once settled, this request's charge covers what the upstream billed for it
            now = wait_for(lambda: settled(redis_server), 20, "the request's charge")
            spent = sum(now[n].spent - last[n].spent for n in BUDGETS)
            entries = mock_upstream.requests()
            cost = billed(entries[seen[0] :])
            seen[0] = len(entries)
            last.update(now)
            assert spent >= cost, (endpoint, body, fault, reply.status_code, spent, cost)

        one()
    mock_upstream.configure(**CLEAN)

    after = wait_for(lambda: settled(redis_server), 20, "every reservation settled or released")
    spent = sum(after[n].spent - before[n].spent for n in BUDGETS)
    assert spent >= billed(mock_upstream.requests())  # every generation charged at least what it billed
    assert all(after[n].reaped == before[n].reaped for n in BUDGETS)  # none left to the reaper
    assert 200 in statuses and any(400 <= c < 500 for c in statuses)

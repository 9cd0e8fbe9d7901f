"""httpx vs. aiohttp vs. the gateway's own client upstream: the same minimal proxy, the same load.

    python -m bench.upstream_clients [--seconds 8]

A bare ASGI app (no framework, no auth, no ledger) forwards each POST body to the mock upstream
with one shared client and returns its answer; wrk drives it at 32 connections. Only the client
calls differ between the rows: httpx, aiohttp, and `aikeys_gateway.upstreams.client.Client` (the
keep-alive HTTP/1.1 client the gateway uses for upstream calls). This isolates the cost of the
HTTP client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from aikeys_dev.devstack.processes import Child, free_port
from aikeys_dev.devstack.upstream import launch_mock_upstream

from bench import wrk

KINDS = ("httpx", "aiohttp", "gateway")  # the upstream clients measured, in table order


def make_app(kind: str, upstream: str) -> Any:
    state: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if kind == "httpx":
                        import httpx

                        state["client"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=256))
                    elif kind == "aiohttp":
                        import aiohttp

                        state["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    else:
                        from aikeys_gateway.upstreams.client import Client

                        state["client"] = Client()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await (state["client"].aclose() if kind == "httpx" else state["client"].close())
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        client = state["client"]
        headers = {"Content-Type": "application/json"}
        if kind == "httpx":
            resp = await client.post(upstream, content=body, headers=headers)
            status, payload = resp.status_code, resp.content
        elif kind == "aiohttp":
            async with client.post(upstream, data=body, headers=headers) as r:
                status, payload = r.status, await r.read()
        else:
            r = await client.request("POST", upstream, body, headers)
            status, payload = r.status, await r.read()  # read() hands the connection back
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def serve() -> None:
    import uvicorn

    kind, upstream, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind not in KINDS:
        raise SystemExit(f"unknown client {kind!r}; one of {', '.join(KINDS)}")
    uvicorn.run(
        make_app(kind, upstream),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aikeys-clients-"))
    mock = launch_mock_upstream(work)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16})
    lines = [
        "## Upstream HTTP client: the same bare proxy with httpx, aiohttp and the gateway's own client"
        " (32 connections)",
        "",
        "A bare ASGI proxy (no framework, no auth, no ledger) forwarding each request to the mock"
        " upstream through one shared client; only the client calls differ between the rows."
        " `gateway` is `aikeys_gateway.upstreams.client.Client`, the keep-alive HTTP/1.1 client the gateway"
        " uses for its upstream calls.",
        "",
        "| client | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    try:
        for kind in KINDS:
            port = free_port()
            child = Child(
                f"proxy-{kind}",
                [
                    sys.executable,
                    "-m",
                    "bench.upstream_clients",
                    "--serve",
                    kind,
                    f"{mock.url}/chat/completions",
                    str(port),
                ],
                work / f"{kind}.log",
                env={**os.environ},
            ).start()
            try:
                import urllib.request

                def up(port: int = port) -> bool:
                    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body.encode())
                    with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
                        return int(resp.status) == 200

                child.wait_until(up, timeout=30)
                wrk.run(f"http://127.0.0.1:{port}/", body, {"Content-Type": "application/json"}, 8, 2)
                r = wrk.run(
                    f"http://127.0.0.1:{port}/", body, {"Content-Type": "application/json"}, 32, args.seconds
                )
                lines.append(f"| {kind} | {r.row()} | {r.errors} |")
            finally:
                child.stop()
    finally:
        mock.stop()
    report = "\n".join([*lines, ""])
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve()
    else:
        main()

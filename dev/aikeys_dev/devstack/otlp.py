"""An OTLP/HTTP trace receiver on loopback: what a collector would get from the gateway.

`POST /v1/traces` takes protobuf (`application/x-protobuf`; plain, gzip or deflate — OTLP JSON is
refused with 415, the gateway sends protobuf); each request's raw bytes are kept, and its spans
decoded with the `opentelemetry-proto` classes. In a test: `with OTLPReceiver() as r: ...
r.spans()`. As a process (a sink for the benchmark): `python -m aikeys_dev.devstack.otlp --port N`;
`GET /_spans/count` says how many spans arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from aikeys_dev.devstack.processes import free_port


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    kind: int  # the proto's SpanKind: 3 is CLIENT
    start_ns: int
    end_ns: int
    status: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def decode(body: bytes) -> list[Span]:
    """The spans of one ExportTraceServiceRequest."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    found = []
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                found.append(
                    Span(
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        kind=int(s.kind),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        status=int(s.status.code),
                        attributes=_attributes(s.attributes),
                        resource=resource,
                        scope=ss.scope.name,
                    )
                )
    return found


def _inflate(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class OTLPReceiver:
    """A collector stand-in on 127.0.0.1, in a thread of this process."""

    def __init__(self, port: int | None = None, keep: bool = True):
        self.port = port or free_port()
        self.keep = keep  # keep raw bodies and decoded spans (a sink only counts)
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self._spans: list[Span] = []
        self.count = 0
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Type", "").split(";")[0] != "application/x-protobuf":
                    self.send_error(415)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = _inflate(self.rfile.read(length), self.headers.get("Content-Encoding", ""))
                receiver._received(body, dict(self.headers))
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceResponse,
                )

                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                if self.path != "/_spans/count":
                    self.send_error(404)
                    return
                answer = json.dumps({"spans": receiver.count}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL, as AIKEYS_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT take it."""
        return f"http://127.0.0.1:{self.port}"

    def _received(self, body: bytes, headers: dict[str, str]) -> None:
        spans = decode(body)
        with self.lock:
            self.count += len(spans)
            if self.keep:
                self.bodies.append(body)
                self.headers.append(headers)
                self._spans.extend(spans)

    def spans(self) -> list[Span]:
        with self.lock:
            return list(self._spans)

    def raw(self) -> bytes:
        """Every exported byte so far, for looking for what must never be there."""
        with self.lock:
            return b"".join(self.bodies)

    def start(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="An OTLP/HTTP trace sink on 127.0.0.1 (counts spans).")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    receiver = OTLPReceiver(args.port, keep=False)
    with contextlib.suppress(KeyboardInterrupt):
        receiver.server.serve_forever()


if __name__ == "__main__":
    main()

"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """Raised anywhere on the request path; rendered by the app as an OpenAI error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def event(self) -> bytes:
        """As a server-sent event, the way OpenAI tells an error once a stream has begun (the
        openai SDKs raise it)."""
        return b"data: " + orjson.dumps(self.body()) + b"\n\n"

    def response(self, request_id: str | None = None) -> Response:
        body = self.body()
        headers = dict(self.headers)
        if request_id:
            headers["x-request-id"] = request_id
        return Response(
            orjson.dumps(body), status_code=self.status, media_type="application/json", headers=headers
        )


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


def insufficient_quota(message: str) -> GatewayError:
    return GatewayError(
        402, message, "insufficient_quota", "insufficient_quota", headers={"x-should-retry": "false"}
    )


def forbidden(message: str, code: str = "model_not_allowed") -> GatewayError:
    return GatewayError(403, message, "permission_error", code)


def not_found(message: str, code: str = "model_not_found", param: str | None = "model") -> GatewayError:
    return GatewayError(404, message, "invalid_request_error", code, param)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body is larger than {limit} bytes.",
        "invalid_request_error",
        "request_too_large",
        headers={"connection": "close"},
    )


def request_timeout(seconds: float) -> GatewayError:
    return GatewayError(
        408,
        f"The request body was not received within {seconds:g} seconds.",
        "invalid_request_error",
        "request_timeout",
        headers={"connection": "close"},
    )


def server_error(message: str) -> GatewayError:
    return GatewayError(500, message, "server_error", "server_error")


def unavailable(message: str) -> GatewayError:
    return GatewayError(503, message, "server_error", "service_unavailable", headers={"retry-after": "1"})


def bad_gateway(message: str) -> GatewayError:
    return GatewayError(502, message, "upstream_error", "upstream_unreachable")


def upstream_too_large(what: str, limit: int) -> GatewayError:
    """An upstream answer (or one event of its stream) past the gateway's cap: not read further."""
    return GatewayError(
        502,
        f"The upstream's {what} is larger than {limit} bytes, the most this gateway takes; it was not "
        "read further.",
        "upstream_error",
        "upstream_too_large",
    )


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, "upstream_error", "upstream_timeout")

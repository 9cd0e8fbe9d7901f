"""Settings from the environment: every parse error names its variable."""

from __future__ import annotations

import pytest
from aikeys_gateway.config import ServerSettings
from aikeys_operator.config import Settings as OperatorSettings

from aikeys.settings import SettingsError, env_bool, env_float, env_int, env_str


def test_values_and_defaults() -> None:
    env = {"A": " 12 ", "B": "0.5", "C": "yes", "D": "off", "E": "", "S": "x"}
    assert env_int(env, "A", 0) == 12
    assert env_float(env, "B", 1.0) == 0.5
    assert env_bool(env, "C", False) is True and env_bool(env, "D", True) is False
    assert env_int(env, "E", 7) == 7  # empty is unset
    assert env_str(env, "S") == "x" and env_str(env, "missing", "d") == "d"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: env_int({"PORT": "80a"}, "PORT", 0), "PORT='80a': not an integer"),
        (lambda: env_int({"PORT": "-1"}, "PORT", 0, minimum=0), "PORT='-1': must be at least 0"),
        (lambda: env_float({"T": "soon"}, "T", 1.0), "T='soon': not a number"),
        (lambda: env_float({"T": "nan"}, "T", 1.0), "T='nan': not a finite number"),
        (lambda: env_bool({"F": "maybe"}, "F", False), "F='maybe': not a boolean"),
    ],
)
def test_errors_name_the_variable(call: object, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        call()  # type: ignore[operator]
    assert str(err.value).startswith(message)


def test_operator_settings() -> None:
    s = OperatorSettings.from_env(
        {"AIKEYS_GATEWAY_URL": "http://gw/api/openai/v1/", "AIKEYS_STATUS_INTERVAL": "2"}
    )
    assert (s.gateway_url, s.status_interval, s.metrics_port, s.redis_url) == (
        "http://gw/api/openai/v1",
        2.0,
        9090,
        None,
    )
    with pytest.raises(SettingsError, match="AIKEYS_OPERATOR_METRICS_PORT='http'"):
        OperatorSettings.from_env({"AIKEYS_OPERATOR_METRICS_PORT": "http"})


def test_gateway_server_settings() -> None:
    assert ServerSettings.from_env({}) == ServerSettings(65536, 100, 10.0, 5, 30)
    s = ServerSettings.from_env(
        {
            "AIKEYS_MAX_HEADER_BYTES": "8192",
            "AIKEYS_MAX_HEADERS": "50",
            "AIKEYS_HEADER_TIMEOUT": "2.5",
            "AIKEYS_IDLE_TIMEOUT": "75",
            "AIKEYS_GRACEFUL_SECONDS": "0",
        }
    )
    assert (s.max_header_bytes, s.max_headers, s.header_timeout, s.idle_timeout, s.graceful_seconds) == (
        8192,
        50,
        2.5,
        75,
        0,
    )
    for name, value, message in [
        ("AIKEYS_MAX_HEADER_BYTES", "64k", "not an integer"),
        ("AIKEYS_MAX_HEADER_BYTES", "100", "must be at least 1024"),
        ("AIKEYS_MAX_HEADERS", "0", "must be at least 8"),
        ("AIKEYS_HEADER_TIMEOUT", "0", "must be at least 0.1"),
        ("AIKEYS_IDLE_TIMEOUT", "0.5", "not an integer"),
        ("AIKEYS_GRACEFUL_SECONDS", "-1", "must be at least 0"),
    ]:
        with pytest.raises(SettingsError, match=f"^{name}='{value}': {message}"):
            ServerSettings.from_env({name: value})

"""The gateway's settings: every error names its variable, flags are strict, `aikeys-gateway`
stops before uvicorn on a bad one (exit 2), and `--help` and docs/configuration.md list every
variable the code reads (the list is taken from the settings objects themselves)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aikeys_gateway.config import Config, ServerSettings, Settings, UISettings, UsageAPISettings
from aikeys_gateway.main import main as gateway_main
from aikeys_operator.config import Settings as OperatorSettings
from aikeys_operator.main import main as operator_main
from click.testing import CliRunner

from aikeys.ledger.meter import FailurePolicy
from aikeys.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
REDIS = {"AIKEYS_REDIS_URL": "redis://127.0.0.1:6379/0"}
FLAGS = ["AIKEYS_FAIL_OPEN", "AIKEYS_METRICS_PER_KEY", "AIKEYS_ACCESS_LOG", "AIKEYS_UI"]


class Recording(Mapping[str, str]):
    """An environment that remembers every variable asked of it."""

    def __init__(self, values: Mapping[str, str]):
        self.env = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def read_by(from_env: Callable[[Mapping[str, str]], Any], env: Mapping[str, str]) -> set[str]:
    recording = Recording(env)
    from_env(recording)
    return recording.asked


GATEWAY_READS = read_by(Config.from_env, REDIS)
OPERATOR_READS = read_by(OperatorSettings.from_env, {})


def test_each_settings_object_lists_exactly_what_it_reads() -> None:
    for cls, env in [
        (Settings, REDIS),
        (ServerSettings, {}),
        (UsageAPISettings, {}),
        (UISettings, {}),
        (OperatorSettings, {}),
    ]:
        listed = [v.name for v in cls.VARIABLES]  # type: ignore[attr-defined]
        assert len(listed) == len(set(listed)), cls
        assert set(listed) == read_by(cls.from_env, env), cls  # type: ignore[attr-defined]
    # among them those the help used to leave out, and those read outside the settings before
    assert {
        "AIKEYS_MAX_ANSWER_BYTES",
        "AIKEYS_MAX_EVENT_BYTES",
        "AIKEYS_UPSTREAM_HOSTS",
        "AIKEYS_UPSTREAM_CONNECT_TIMEOUT",
        "AIKEYS_RESPONSES_TTL",
        "AIKEYS_BREAKER_FAILURES",
        "AIKEYS_BREAKER_OPEN_SECONDS",
        "AIKEYS_REDIS_PASSWORD",
        "POD_NAMESPACE",
        "POD_NAME",
    } <= GATEWAY_READS


def test_values_are_read() -> None:
    s = Settings.from_env(
        REDIS
        | {
            "AIKEYS_FAIL_OPEN": "YES",
            "AIKEYS_ACCESS_LOG": "0",
            "AIKEYS_REDIS_TIMEOUT": "2.5",
            "AIKEYS_MAX_BODY_BYTES": "1024",
            "AIKEYS_UPSTREAM_HOSTS": " API.openai.com, ,*.azure.com ",
            "AIKEYS_CREDENTIALS_SECRET": "creds/projected",
            "AIKEYS_REDIS_PASSWORD": "hunter2",
            "POD_NAMESPACE": "aikeys",
            "POD_NAME": "gw-0",
            "AIKEYS_OTLP_ENDPOINT": "http://otel:4318",
        }
    )
    assert s.failure_policy is FailurePolicy.OPEN and s.access_log is False
    assert (s.redis_timeout, s.max_body_bytes) == (2.5, 1024)
    assert s.upstream_hosts == ("api.openai.com", "*.azure.com")
    assert s.credentials_secret == ("creds", "projected")
    assert (s.pod_namespace, s.pod_name, s.otlp_endpoint) == ("aikeys", "gw-0", "http://otel:4318/v1/traces")
    assert s.redis_password == "hunter2" and "hunter2" not in repr(s)  # a secret never in a log line
    defaults = Settings.from_env(REDIS | {"POD_NAMESPACE": "team"})
    assert defaults == Settings(
        REDIS["AIKEYS_REDIS_URL"],
        credentials_secret=("team", "aikeys-provider-credentials"),
        pod_namespace="team",
    )
    assert "session-key-" not in repr(UISettings.from_env({"AIKEYS_UI_SESSION_KEY": "session-key-" * 4}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "AIKEYS_REDIS_URL is not set"),
        ({"AIKEYS_REDIS_URL": "   "}, "AIKEYS_REDIS_URL is not set"),
        ({"AIKEYS_REDIS_URL": "http://redis:6379"}, "AIKEYS_REDIS_URL: the scheme must be one of"),
        (REDIS | {"AIKEYS_REDIS_TIMEOUT": "fast"}, "AIKEYS_REDIS_TIMEOUT='fast': not a number"),
        (REDIS | {"AIKEYS_MAX_BODY_BYTES": "1MB"}, "AIKEYS_MAX_BODY_BYTES='1MB': not an integer"),
        (REDIS | {"AIKEYS_WATCH_TIMEOUT": "0"}, "AIKEYS_WATCH_TIMEOUT='0': must be at least 1"),
        (REDIS | {"AIKEYS_LEASE_SECONDS": "inf"}, "AIKEYS_LEASE_SECONDS='inf': not a finite number"),
        (REDIS | {"AIKEYS_BREAKER_FAILURES": "3.5"}, "AIKEYS_BREAKER_FAILURES='3.5': not an integer"),
        (REDIS | {"AIKEYS_STREAM_DRAIN_SECONDS": "-1"}, "AIKEYS_STREAM_DRAIN_SECONDS='-1': must be at least"),
        (REDIS | {"AIKEYS_CREDENTIALS_SECRET": "team/"}, "AIKEYS_CREDENTIALS_SECRET='team/'"),
        (
            REDIS | {"AIKEYS_OTLP_ENDPOINT": "otel:4317"},
            "AIKEYS_OTLP_ENDPOINT='otel:4317': the OTLP endpoint",
        ),
        (
            REDIS | {"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://otel"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='grpc://otel': the OTLP endpoint",
        ),
        (REDIS | {"AIKEYS_IDLE_TIMEOUT": "1.5"}, "AIKEYS_IDLE_TIMEOUT='1.5': not an integer"),
        (REDIS | {"AIKEYS_USAGE_API_PORT": "https"}, "AIKEYS_USAGE_API_PORT='https': not an integer"),
        (REDIS | {"AIKEYS_UI_SESSION_HOURS": "a day"}, "AIKEYS_UI_SESSION_HOURS='a day': not a number"),
        (REDIS | {"AIKEYS_UI_SECURE_COOKIES": "maybe"}, "AIKEYS_UI_SECURE_COOKIES='maybe': one of auto"),
    ],
)
def test_an_error_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Config.from_env(env)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("name", FLAGS)
def test_flags_are_strict(name: str) -> None:
    def flag(value: str) -> bool:
        c = Config.from_env(REDIS | {name: value})
        return {
            "AIKEYS_FAIL_OPEN": c.gateway.failure_policy is FailurePolicy.OPEN,
            "AIKEYS_METRICS_PER_KEY": c.gateway.metrics_per_key,
            "AIKEYS_ACCESS_LOG": c.gateway.access_log,
            "AIKEYS_UI": c.ui.enabled,
        }[name]

    for value in ("true", "True", "1", "yes", "on"):
        assert flag(value) is True, value
    for value in ("false", "FALSE", "0", "no", "off"):
        assert flag(value) is False, value
    for value in ("ture", "flase", "2", "enabled", "y"):
        with pytest.raises(SettingsError, match=f"^{name}='{value}': not a boolean"):
            flag(value)


def test_operator_settings_name_their_variable() -> None:
    with pytest.raises(SettingsError, match=r"^AIKEYS_LEADER_ELECTION='ture': not a boolean"):
        OperatorSettings.from_env({"AIKEYS_LEADER_ELECTION": "ture"})
    with pytest.raises(SettingsError, match=r"^AIKEYS_CREDENTIALS_SECRET='/name'"):
        OperatorSettings.from_env({"AIKEYS_CREDENTIALS_SECRET": "/name"})
    s = OperatorSettings.from_env({"AIKEYS_REDIS_PASSWORD": "hunter2", "POD_NAMESPACE": "ops"})
    assert (s.redis_password, s.pod_namespace) == ("hunter2", "ops") and "hunter2" not in repr(s)


def _gateway(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`aikeys-gateway` as a process, with only `env` (and PATH) for its environment."""
    return subprocess.run(
        [sys.executable, "-m", "aikeys_gateway.main", "--host", "127.0.0.1", "--port", "9"],
        env={"PATH": os.environ.get("PATH", "")} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({}, "aikeys-gateway: AIKEYS_REDIS_URL is not set: "),
        (REDIS | {"AIKEYS_FAIL_OPEN": "ture"}, "aikeys-gateway: AIKEYS_FAIL_OPEN='ture': not a boolean"),
        (
            REDIS | {"AIKEYS_GRACEFUL_SECONDS": "30s"},
            "aikeys-gateway: AIKEYS_GRACEFUL_SECONDS='30s': not an integer",
        ),
        (
            REDIS | {"AIKEYS_UI_SESSION_KEY": "short"},
            "aikeys-gateway: AIKEYS_UI_SESSION_KEY: use at least 32",
        ),
    ],
)
def test_main_stops_before_uvicorn_with_one_line_and_exit_code_2(env: dict[str, str], line: str) -> None:
    result = _gateway(env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [only] = result.stderr.splitlines()  # one line: no traceback, nothing from uvicorn
    assert only.startswith(line), only


def test_help_lists_every_variable_the_gateway_reads() -> None:
    result = CliRunner().invoke(gateway_main, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    missing = sorted(name for name in GATEWAY_READS if name not in result.output)
    assert not missing, missing


def test_operator_help_lists_every_variable_it_reads() -> None:
    result = CliRunner().invoke(operator_main, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    missing = sorted(name for name in OPERATOR_READS if name not in result.output)
    assert not missing, missing


def test_the_configuration_reference_lists_every_variable() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    gateway, operator = text.split("## The operator", 1)
    assert not sorted(n for n in GATEWAY_READS if f"| `{n}` |" not in gateway)
    assert not sorted(n for n in OPERATOR_READS if f"| `{n}` |" not in operator)

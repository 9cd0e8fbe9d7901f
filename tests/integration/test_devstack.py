"""`aikeys-dev up` / `aikeys-dev down` (what `make dev` / `make dev-down` run) on a real stack."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import redis
from aikeys_dev.devstack.binaries import locate
from aikeys_dev.devstack.processes import pid_alive
from aikeys_dev.devstack.stack import read_env

pytestmark = pytest.mark.integration


def _aikeys_dev(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIKEYS_DEV_DIR": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "aikeys_dev.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_dev_up_serves_and_dev_down_stops(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    up = _aikeys_dev(state, "up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "aikeys dev stack is up" in up.stdout
        env = read_env(state / "env")
        assert set(env) >= {
            "KUBECONFIG",
            "AIKEYS_REDIS_URL",
            "AIKEYS_MOCK_UPSTREAM_URL",
            "AIKEYS_GATEWAY_URL",
            "AIKEYS_DEMO_KEY",
        }
        # the printed demo key works through the printed gateway URL, as the summary shows
        assert env["AIKEYS_DEMO_KEY"] in up.stdout
        demo = openai.OpenAI(
            base_url=env["AIKEYS_GATEWAY_URL"], api_key=env["AIKEYS_DEMO_KEY"], max_retries=0
        )
        answer = demo.chat.completions.create(
            model="demo:mock/gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
        assert answer.choices[0].message.content
        assert env["KUBECONFIG"] in up.stdout
        # what a user does next: source the env file and use the pinned kubectl, redis, an OpenAI client
        version = subprocess.run(
            ["bash", "-c", f". {state / 'env'} && kubectl get --raw /version && helm version --short"],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert locate().k8s_version in version.stdout
        assert "v3." in version.stdout
        assert redis.Redis.from_url(env["AIKEYS_REDIS_URL"]).ping()
        # the CRDs are installed and the operator mints keys
        script = (
            f". {state / 'env'} && kubectl create namespace demo-probe >/dev/null && "
            "kubectl apply -n demo-probe -f - >/dev/null <<'EOF'\n"
            "apiVersion: aikeys.dev/v1alpha1\nkind: Allocation\nmetadata: {name: a}\n"
            "spec: {budget: '1.00'}\n---\n"
            "apiVersion: aikeys.dev/v1alpha1\nkind: AIKey\nmetadata: {name: k}\n"
            "spec: {allocationRef: {name: a}}\n"
            "EOF\n"
            "kubectl wait -n demo-probe aikey/k --for=jsonpath='{.status.phase}'=Active --timeout=60s"
        )
        minted = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert minted.returncode == 0, minted.stderr
        assert "condition met" in minted.stdout
        # usage through the API server: kubectl's own table, and the plugin on PATH
        usage = subprocess.run(
            [
                "bash",
                "-c",
                f". {state / 'env'} && kubectl get keyusages -n demo && kubectl aikeys -n demo usage",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert usage.returncode == 0, usage.stderr
        assert usage.stdout.splitlines()[1].split()[:2] == ["demo", "demo"]  # key demo, allocation demo
        assert "Usage of namespace demo" in usage.stdout
        reply = openai.OpenAI(base_url=env["AIKEYS_MOCK_UPSTREAM_URL"], api_key="x").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        # .dev/env holds a key: only its owner may read it
        assert stat.S_IMODE((state / "env").stat().st_mode) == 0o600
        # a component that dies is named and restarted; the rest stays up
        port = env["AIKEYS_GATEWAY_URL"].split(":")[2].split("/")[0]
        gateway_pid = int(
            subprocess.run(
                ["pgrep", "-f", f"aikeys_gateway.main .*--port {port}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[0]
        )
        os.kill(gateway_pid, signal.SIGKILL)
        log = state / "stack.log"
        deadline = time.monotonic() + 60
        while "gateway restarted" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "gateway exited" in log.read_text() and "gateway restarted" in log.read_text()
        assert demo.chat.completions.create(
            model="demo:mock/gpt-4o-mini", messages=[{"role": "user", "content": "Hello again"}]
        ).choices
        again = _aikeys_dev(state, "up")
        assert "already running" in again.stdout
        pid = int((state / "stack.pid").read_text())
    finally:
        down = _aikeys_dev(state, "down")
    assert down.returncode == 0
    assert "stopped" in down.stdout
    assert not (state / "env").exists()
    assert not pid_alive(pid)
    assert _aikeys_dev(state, "status").returncode == 1

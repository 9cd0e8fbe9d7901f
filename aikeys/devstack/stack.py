"""The local dev stack: one supervisor process that owns every server of `make dev`.

`aikeys dev up` starts this module detached; it brings up the control plane, Redis and the
mock upstream (and whatever later layers add), writes `.dev/env` with shell exports, then
sleeps until SIGTERM/SIGINT, when it stops everything in reverse order. Children die with it
even if it is SIGKILLed (see `processes`).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from aikeys.devstack.binaries import REPO_ROOT
from aikeys.devstack.controlplane import ControlPlane, launch
from aikeys.devstack.processes import pid_alive
from aikeys.devstack.redis import RedisServer, launch_redis
from aikeys.devstack.services import OperatorProcess
from aikeys.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

STATE_DIR = Path(os.environ.get("AIKEYS_DEV_DIR", REPO_ROOT / ".dev"))
ENV_FILE = STATE_DIR / "env"
PID_FILE = STATE_DIR / "stack.pid"
LOG_FILE = STATE_DIR / "stack.log"


def render_env(values: dict[str, str], path_dirs: list[Path] | None = None) -> str:
    lines = ["# aikeys dev stack: source this file (. .dev/env)"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    if path_dirs:  # the pinned kubectl and helm first on PATH
        lines.append(f'export PATH={shlex.quote(":".join(map(str, path_dirs)))}:"$PATH"')
    return "\n".join(lines) + "\n"


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            if key != "PATH":
                values[key] = shlex.split(value)[0] if value else ""
    return values


def running_pid() -> int | None:
    """PID of a live supervisor, or None."""
    try:
        pid = int(PID_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def supervise(state_dir: Path = STATE_DIR) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "env").unlink(missing_ok=True)
    started = time.monotonic()
    cp: ControlPlane | None = None
    redis: RedisServer | None = None
    mock: MockUpstreamProcess | None = None
    operator: OperatorProcess | None = None
    try:
        print("starting control plane (etcd, kube-apiserver, kube-controller-manager) ...", flush=True)
        cp = launch(state_dir / "controlplane")
        print(f"control plane ready in {cp.startup_seconds:.1f}s at {cp.url}", flush=True)
        redis = launch_redis(state_dir / "redis")
        print(f"redis ready at {redis.url}", flush=True)
        mock = launch_mock_upstream(state_dir / "logs")
        print(f"mock upstream ready at {mock.url}", flush=True)
        cp.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        for crd in ("aikeys", "allocations", "aiproviders"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.aikeys.dev", "--timeout=60s")
        print("CRDs applied (kubectl get ai)", flush=True)
        operator = OperatorProcess(cp.kubeconfig, redis.url, state_dir / "logs" / "operator.log").start()
        print(f"operator running (log {operator.log_path})", flush=True)
        env = {
            "KUBECONFIG": str(cp.kubeconfig),
            "AIKEYS_REDIS_URL": redis.url,
            "AIKEYS_MOCK_UPSTREAM_URL": mock.url,
        }
        tools = [cp.binaries.kubectl.parent, cp.binaries.helm.parent]
        (state_dir / "env").write_text(render_env(env, tools))
        print(f"dev stack up in {time.monotonic() - started:.1f}s", flush=True)
        while not stop.wait(1.0):
            for child in [*cp.children.values(), redis.child, mock.child, operator.child]:
                assert child is not None
                if not child.alive():
                    print(f"{child.name} exited; stopping the stack. log:\n{child.log_tail()}", flush=True)
                    stop.set()
    finally:
        print("stopping dev stack ...", flush=True)
        (state_dir / "env").unlink(missing_ok=True)
        for part in (operator, mock, redis, cp):
            if part is not None:
                part.stop()
        PID_FILE.unlink(missing_ok=True)
        print("dev stack stopped", flush=True)


if __name__ == "__main__":
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(os.getpid()))
    try:
        supervise()
    except Exception as err:  # reported to the `dev up` caller through the log
        print(f"dev stack failed: {err}", file=sys.stderr, flush=True)
        sys.exit(1)

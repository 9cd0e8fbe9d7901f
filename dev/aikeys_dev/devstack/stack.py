"""The local dev stack: one supervisor process that owns every server of `make dev`.

`aikeys-dev up` starts this module detached; it brings up the control plane, Redis and the
mock upstream (and whatever later layers add), writes `.dev/env` with shell exports (mode 0600:
it holds a key), then watches its children until SIGTERM/SIGINT, when it stops everything in
reverse order. A child that dies is named in the log and restarted (Redis, mock upstream,
operator, gateway: at most `RESTARTS` times a minute); a control-plane process is named and
left down while the rest keeps running. Children die with the supervisor even if it is
SIGKILLed (see `processes`).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aikeys_dev.devstack import admission, usageapi
from aikeys_dev.devstack.binaries import REPO_ROOT
from aikeys_dev.devstack.controlplane import ADMIN_USER, ControlPlane, launch
from aikeys_dev.devstack.processes import Child, free_port, pid_alive
from aikeys_dev.devstack.redis import RedisServer, launch_redis
from aikeys_dev.devstack.services import GatewayProcess, OperatorProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

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


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a key and a kubeconfig path)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


RESTARTS = 5  # restarts of one component a minute before the supervisor leaves it down


@dataclass
class Watched:
    """One component the supervisor keeps alive."""

    name: str
    child: Callable[[], Child | None]
    restart: Callable[[], object] | None  # None: report its death, do not restart it
    restarts: list[float] = field(default_factory=list)
    given_up: bool = False

    def check(self, now: float) -> None:
        child = self.child()
        if self.given_up or child is None or child.alive():
            return
        print(f"{self.name} exited; log tail:\n{child.log_tail()}", flush=True)
        self.restarts = [t for t in self.restarts if now - t < 60]
        if self.restart is None or len(self.restarts) >= RESTARTS:
            self.given_up = True
            print(f"{self.name} stays down; the rest of the stack keeps running", flush=True)
            return
        self.restarts.append(now)
        try:
            self.restart()
            print(f"{self.name} restarted", flush=True)
        except Exception as err:
            print(f"{self.name} did not restart: {err}", flush=True)


def running_pid() -> int | None:
    """PID of a live supervisor, or None."""
    try:
        pid = int(PID_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


SYSTEM_NAMESPACE = "aikeys-system"
CREDENTIALS = f"{SYSTEM_NAMESPACE}/aikeys-provider-credentials"
DEMO = """
apiVersion: aikeys.dev/v1alpha1
kind: AIProvider
metadata: {{name: mock}}
spec:
  baseURL: {mock}
  models:
  - {{name: gpt-4o-mini, inputPricePerMillion: "0.15", outputPricePerMillion: "0.60", maxOutputTokens: 4096}}
  - {{name: embeddings, inputPricePerMillion: "0.02", outputPricePerMillion: "0"}}
---
apiVersion: aikeys.dev/v1alpha1
kind: Allocation
metadata: {{name: demo}}
spec: {{budget: "10.00", period: Monthly}}
---
apiVersion: aikeys.dev/v1alpha1
kind: AIKey
metadata: {{name: demo}}
spec: {{allocationRef: {{name: demo}}, owner: {owner}, ttl: 720h, description: "make {source} demo key"}}
"""


# The web pages are on in the dev stack; the session key lives as long as the stack.
UI_ENV = {"AIKEYS_UI": "true", "AIKEYS_UI_SESSION_KEY": secrets.token_urlsafe(32)}
# Someone to sign in as: `kubectl -n demo create token demo-user` (manages keys in demo, nothing else)
DEMO_USER = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: demo-user}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: aikeys-user}
rules:
- apiGroups: [aikeys.dev]
  resources: [aikeys, allocations]
  verbs: [get, list, watch, create, update, patch, delete]
- {apiGroups: [""], resources: [secrets], verbs: [get, delete]}
- {apiGroups: [usage.aikeys.dev], resources: [keyusages], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: demo-user}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: aikeys-user}
subjects: [{kind: ServiceAccount, name: demo-user, namespace: demo}]
"""


def seed_demo(cp: ControlPlane, mock: MockUpstreamProcess, timeout: float = 60) -> str:
    """A provider on the mock upstream, an allocation and a key in namespace `demo`, and a person who
    may manage keys there (ServiceAccount demo-user); returns the key."""
    cp.kubectl("create", "namespace", "demo")
    cp.kubectl(
        "apply",
        "-n",
        "demo",
        "-f",
        "-",
        stdin=DEMO.format(mock=mock.url, owner=ADMIN_USER, source="dev") + "---" + DEMO_USER,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "secret", "aikey-demo", "-n", "demo", "-o", "json", check=False)
        if out.returncode == 0:
            return base64.b64decode(json.loads(out.stdout)["data"]["OPENAI_API_KEY"]).decode()
        time.sleep(0.1)
    raise TimeoutError("the demo key was not minted")


def install_api(cp: ControlPlane) -> None:
    """The CRDs, and the chart's admission policy that makes a key's owner its creator."""
    cp.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    for crd in ("aikeys", "allocations", "aiproviders"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.aikeys.dev", "--timeout=60s")
    print("CRDs applied (kubectl get ai)", flush=True)
    admission.apply_owner_policy(cp)
    print("key-owner admission policy enforced (spec.owner is the creating user)", flush=True)


def watch_list(
    cp: ControlPlane,
    redis: RedisServer,
    mock: MockUpstreamProcess,
    operator: OperatorProcess,
    gateway: GatewayProcess,
) -> list[Watched]:
    def restart_mock() -> None:
        mock.child.start()
        mock.child.wait_until(lambda: mock._call("GET", "/_mock/config") is not None, timeout=30)

    control = [Watched(name, lambda c=child: c, None) for name, child in cp.children.items()]  # type: ignore[misc]
    return [
        *control,
        Watched("redis", lambda: redis.child, redis.start),
        Watched("mock upstream", lambda: mock.child, restart_mock),
        Watched("operator", lambda: operator.child, operator.start),
        Watched("gateway", lambda: gateway.child, lambda: gateway.start(port=gateway.port)),
    ]


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
    gateway: GatewayProcess | None = None
    try:
        print("starting control plane (etcd, kube-apiserver, kube-controller-manager) ...", flush=True)
        shutil.rmtree(state_dir / "controlplane", ignore_errors=True)  # every `make dev` starts clean
        cp = launch(state_dir / "controlplane")
        print(f"control plane ready in {cp.startup_seconds:.1f}s at {cp.url}", flush=True)
        redis = launch_redis(state_dir / "redis")
        print(f"redis ready at {redis.url}", flush=True)
        mock = launch_mock_upstream(state_dir / "logs")
        print(f"mock upstream ready at {mock.url}", flush=True)
        install_api(cp)
        cp.kubectl("create", "namespace", SYSTEM_NAMESPACE)
        usage_api = usageapi.register(cp, state_dir / "usage-api")  # kubectl get keyusages
        gateway = GatewayProcess(
            cp.kubeconfig,
            redis.url,
            state_dir / "logs" / "gateway.log",
            CREDENTIALS,
            extra_env={**usage_api.env(), **UI_ENV},
        )
        gateway.port = free_port()
        operator = OperatorProcess(
            cp.kubeconfig,
            redis.url,
            state_dir / "logs" / "operator.log",
            gateway_url=gateway.openai_url,
            extra_env={"AIKEYS_CREDENTIALS_SECRET": CREDENTIALS},
        ).start()
        print(f"operator running (log {operator.log_path})", flush=True)
        gateway.start()
        print(f"gateway ready at {gateway.openai_url}", flush=True)
        usageapi.wait_available(cp)
        print("usage API registered with the API server (kubectl get keyusages -A)", flush=True)
        demo_key = seed_demo(cp, mock)
        print(
            "demo namespace seeded: AIProvider demo/mock, Allocation demo/demo (10 USD), AIKey demo/demo",
            flush=True,
        )
        env = {
            "KUBECONFIG": str(cp.kubeconfig),
            "AIKEYS_GATEWAY_URL": gateway.openai_url,
            "AIKEYS_MOCK_UPSTREAM_URL": mock.url,
            "AIKEYS_REDIS_URL": redis.url,
            "AIKEYS_DEMO_KEY": demo_key,
            "AIKEYS_DEMO_MODEL": "demo:mock/gpt-4o-mini",
            "AIKEYS_UI_URL": f"{gateway.url}/ui/",
            "OPENAI_BASE_URL": gateway.openai_url,
            "OPENAI_API_KEY": demo_key,
        }
        # the pinned kubectl and helm, and this virtualenv (kubectl-aikeys: `kubectl aikeys ...` works)
        tools = [cp.binaries.kubectl.parent, cp.binaries.helm.parent, Path(sys.executable).parent]
        write_private(state_dir / "env", render_env(env, tools))
        print(f"dev stack up in {time.monotonic() - started:.1f}s", flush=True)
        watched = watch_list(cp, redis, mock, operator, gateway)
        while not stop.wait(1.0):
            for w in watched:
                w.check(time.monotonic())
    finally:
        print("stopping dev stack ...", flush=True)
        (state_dir / "env").unlink(missing_ok=True)
        for part in (gateway, operator, mock, redis, cp):
            if part is not None:
                part.stop()
        PID_FILE.unlink(missing_ok=True)
        print("dev stack stopped", flush=True)


if __name__ == "__main__":
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(os.getpid()))
    try:
        supervise()
    except Exception as err:  # reported to the `aikeys-dev up` caller through the log
        print(f"dev stack failed: {err}", file=sys.stderr, flush=True)
        sys.exit(1)

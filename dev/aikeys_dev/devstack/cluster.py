"""The project as users run it: the chart installed with Helm on a real node, clients through the Ingress.

`make cluster` (= `python -m aikeys_dev.devstack.cluster up`) builds what is missing (the node's binaries,
the images), starts a supervisor in the background that brings up a node (`aikeys_dev.devstack.node`),
installs `charts/aikeys` with the local images, runs an in-cluster mock upstream, seeds the `demo`
namespace, writes `.cluster/env` and prints the Ingress URL and a demo key. `make cluster-down`
stops it (and cleans up a node whose supervisor was killed). tests/e2e use the same functions.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aikeys_dev.devstack.binaries import REPO_ROOT
from aikeys_dev.devstack.controlplane import ADMIN_USER
from aikeys_dev.devstack.images import Images, build_all
from aikeys_dev.devstack.node.binaries import ensure_node_built
from aikeys_dev.devstack.node.launch import launch_node
from aikeys_dev.devstack.node.running import Node
from aikeys_dev.devstack.node.teardown import reap_stale
from aikeys_dev.devstack.processes import pid_alive
from aikeys_dev.devstack.stack import (
    DEMO,  # the dev stack's demo objects, the same on the real node
    DEMO_USER,
    render_env,
    write_private,
)

CHART = REPO_ROOT / "charts" / "aikeys"
RELEASE = "aikeys"
NAMESPACE = "aikeys-system"
MOCK_NAMESPACE = "aikeys-mock"
MOCK_HOST = "mock.aikeys.local"  # the mock's own Ingress rule (tests change its behaviour through it)
STATE_DIR = Path(os.environ.get("AIKEYS_CLUSTER_DIR", REPO_ROOT / ".cluster"))
ENV_FILE = STATE_DIR / "env"
PID_FILE = STATE_DIR / "cluster.pid"
LOG_FILE = STATE_DIR / "cluster.log"


def chart_values(node: Node, images: Images, **overrides: Any) -> dict[str, Any]:
    """The chart's values for this node: local images (never pulled), Traefik's IngressClass, the
    node's Ingress as public URL, requests that fit two cores with a rolling update's surge pod."""
    repository, _, tag = images.aikeys_ref.rpartition(":")
    values: dict[str, Any] = {
        "image": {"repository": repository.removeprefix("docker.io/library/"), "tag": tag},
        "ingress": {"className": "traefik"},
        "gateway": {
            "publicURL": f"{node.ingress_url}/api/openai/v1",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
        "operator": {"statusInterval": 1},
        "redis": {"bundled": {"image": images.redis_ref, "persistence": {"enabled": True, "size": "1Gi"}}},
    }
    return _merge(values, overrides)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def fullname(release: str) -> str:
    """The chart's `aikeys.fullname`."""
    return (release if "aikeys" in release else f"{release}-aikeys")[:50].rstrip("-")


def redis_volume(node: Node, release: str, namespace: str, size: str = "1Gi") -> Path:
    """A hostPath PersistentVolume for the bundled Redis' claim (the node has no StorageClass),
    reserved for that claim; returns the directory on this machine."""
    directory = node.workdir / "volumes" / f"{namespace}-{release}-redis"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)  # Redis runs as 999; hostPath volumes get no fsGroup
    claim = f"data-{fullname(release)}-redis-0"  # the StatefulSet's volumeClaimTemplate
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{release}-redis"},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(directory), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    node.kubectl("apply", "-f", "-", stdin=json.dumps(pv))
    return directory


MOCK_MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: mock-upstream, labels: {{app: mock-upstream}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: mock-upstream}}}}
  template:
    metadata: {{labels: {{app: mock-upstream}}}}
    spec:
      containers:
      - name: mock
        image: {image}
        imagePullPolicy: Never
        command: [python, -m, aikeys_dev.mockupstream, --host, 0.0.0.0, --port, "8080"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /_mock/config, port: http}}, periodSeconds: 2}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          capabilities: {{drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {{name: mock-upstream}}
spec:
  selector: {{app: mock-upstream}}
  ports: [{{name: http, port: 8080, targetPort: http}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: mock-upstream}}
spec:
  ingressClassName: traefik
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: mock-upstream, port: {{name: http}}}}}}}}
"""


def deploy_mock_upstream(node: Node, images: Images, namespace: str = MOCK_NAMESPACE) -> str:
    """The mock OpenAI upstream as a Deployment (the dev tools' image); returns its in-cluster base URL.
    From the host it answers through the Ingress with `Host: mock.aikeys.local`."""
    node.kubectl("create", "namespace", namespace, check=False)
    node.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=MOCK_MANIFEST.format(image=images.dev_ref, host=MOCK_HOST),
    )
    node.kubectl("rollout", "status", "deployment/mock-upstream", "-n", namespace, "--timeout=120s")
    return f"http://mock-upstream.{namespace}.svc.cluster.local:8080/v1"


def helm_install(
    node: Node,
    images: Images,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    timeout: str = "180s",
    **overrides: Any,
) -> subprocess.CompletedProcess[str]:
    """`helm install --wait` of charts/aikeys with this node's values (and a volume for Redis)."""
    node.kubectl("create", "namespace", namespace, check=False)
    values = chart_values(node, images, **overrides)
    if values["redis"]["bundled"].get("persistence", {}).get("enabled"):
        redis_volume(node, release, namespace, values["redis"]["bundled"]["persistence"]["size"])
    values_file = node.workdir / f"values-{namespace}-{release}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return node.helm(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values_file),
        "--wait",
        f"--timeout={timeout}",
    )


def seed_demo(node: Node, mock_url: str, namespace: str = "demo", timeout: float = 60) -> str:
    """Like the dev stack's demo: a provider on the mock, a 10 USD allocation, a key owned by the
    kubeconfig's user, and a person for the web pages (ServiceAccount demo-user); returns the key."""
    node.kubectl("create", "namespace", namespace, check=False)
    node.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=DEMO.format(mock=mock_url, owner=ADMIN_USER, source="cluster") + "---" + DEMO_USER,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = node.kubectl("get", "secret", "aikey-demo", "-n", namespace, "-o", "json", check=False)
        if out.returncode == 0:
            return base64.b64decode(json.loads(out.stdout)["data"]["OPENAI_API_KEY"]).decode()
        time.sleep(0.2)
    raise TimeoutError("the demo key was not minted")


@dataclass
class Cluster:
    node: Node
    images: Images
    mock_url: str
    demo_key: str
    timings: dict[str, float]

    @property
    def openai_url(self) -> str:
        return f"{self.node.ingress_url}/api/openai/v1"


def bring_up(workdir: Path) -> Cluster:
    """Build what is missing, start a node, install the chart, seed the demo; caller stops the node."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    binaries = ensure_node_built()
    images = build_all(binaries)
    timings["builds (cached: checks only)"] = time.monotonic() - t0
    node = launch_node(workdir, images.all)
    try:
        timings.update({f"node: {k}": v for k, v in node.timings.items()})
        t = time.monotonic()
        mock_url = deploy_mock_upstream(node, images)
        timings["mock upstream Ready"] = time.monotonic() - t
        t = time.monotonic()
        helm_install(node, images)
        timings["helm install --wait"] = time.monotonic() - t
        t = time.monotonic()
        key = seed_demo(node, mock_url)
        timings["demo seeded"] = time.monotonic() - t
    except BaseException:
        node.stop()
        raise
    timings["total"] = time.monotonic() - t0
    return Cluster(node=node, images=images, mock_url=mock_url, demo_key=key, timings=timings)


# --- `make cluster`: a supervisor in the background ------------------------------------------


def running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def read_env() -> dict[str, str]:
    from aikeys_dev.devstack.stack import read_env as read

    return read(ENV_FILE)


def supervise(state_dir: Path = STATE_DIR) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "env").unlink(missing_ok=True)
    cluster: Cluster | None = None
    try:
        print("building what is missing, starting the node, installing the chart ...", flush=True)
        shutil.rmtree(state_dir / "node", ignore_errors=True)  # every `make cluster` starts clean
        cluster = bring_up(state_dir / "node")
        node = cluster.node
        for name, seconds in cluster.timings.items():
            print(f"  {name:<40} {seconds:6.1f}s", flush=True)
        env = {
            "KUBECONFIG": str(node.kubeconfig),
            "AIKEYS_GATEWAY_URL": cluster.openai_url,
            "AIKEYS_DEMO_KEY": cluster.demo_key,
            "AIKEYS_DEMO_MODEL": "demo:mock/gpt-4o-mini",
            "OPENAI_BASE_URL": cluster.openai_url,
            "OPENAI_API_KEY": cluster.demo_key,
        }
        tools = [node.binaries.control_plane.kubectl.parent, node.binaries.control_plane.helm.parent]
        write_private(state_dir / "env", render_env(env, [*tools, Path(sys.executable).parent]))
        print("cluster up", flush=True)
        while not stop.wait(1.0):
            dead = [name for name, child in node.children.items() if not child.alive()]
            if dead:
                print(
                    f"{', '.join(dead)} exited; stopping the cluster (logs in {node.workdir / 'logs'})",
                    flush=True,
                )
                break
    finally:
        print("stopping the cluster ...", flush=True)
        (state_dir / "env").unlink(missing_ok=True)
        if cluster is not None:
            cluster.node.stop()
        PID_FILE.unlink(missing_ok=True)
        print("cluster stopped", flush=True)


def _summary(env: dict[str, str]) -> str:
    example = (
        "python -c 'from openai import OpenAI; print(OpenAI().chat.completions.create(\n"
        '                  model="demo:mock/gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])'
        ".choices[0].message.content)'"
    )
    return f"""
aikeys is up on a real one-node cluster (release {RELEASE} of charts/aikeys in {NAMESPACE}).

  kubeconfig                  {env["KUBECONFIG"]}
  Ingress (OpenAI base URL)   {env["AIKEYS_GATEWAY_URL"]}
  web pages                   {env["AIKEYS_GATEWAY_URL"].removesuffix("/api/openai/v1")}/ui/
                              (sign in with: kubectl -n demo create token demo-user)
  demo key                    {env["AIKEYS_DEMO_KEY"]}

In your shell:  . {os.path.relpath(ENV_FILE)}
                (KUBECONFIG, OPENAI_BASE_URL, OPENAI_API_KEY; the pinned kubectl and helm on PATH)
Then e.g.:      kubectl get pods -A
                helm test {RELEASE} -n {NAMESPACE}
                {example}
                kubectl get ai -n demo
Stop it with:   make cluster-down
"""


def up(timeout: float = 3600) -> int:
    if running_pid() and ENV_FILE.exists():
        print("aikeys cluster is already running.")
        print(_summary(read_env()))
        return 0
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    ENV_FILE.unlink(missing_ok=True)
    with LOG_FILE.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aikeys_dev.devstack.cluster", "supervise"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PID_FILE.write_text(str(proc.pid))
    print(f"starting aikeys cluster (pid {proc.pid}, log {LOG_FILE}) ...", flush=True)
    shown = 0
    deadline = time.monotonic() + timeout
    while not ENV_FILE.exists():
        lines = LOG_FILE.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            print(f"  {line}", flush=True)
        shown = len(lines)
        if proc.poll() is not None:
            print(f"the cluster exited ({proc.returncode}); see {LOG_FILE}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGTERM)
            print(f"the cluster was not up after {timeout:.0f}s; see {LOG_FILE}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    for line in LOG_FILE.read_text(errors="replace").splitlines()[shown:]:
        print(f"  {line}")
    print(_summary(read_env()))
    return 0


def down() -> int:
    pid = running_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while running_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if running_pid() is not None:
            os.kill(pid, signal.SIGKILL)
    removed = reap_stale()  # also what a killed supervisor left behind
    print("aikeys cluster stopped." if pid or removed else "aikeys cluster is not running.")
    return 0


def status() -> int:
    if running_pid() and ENV_FILE.exists():
        print(_summary(read_env()))
        return 0
    print("aikeys cluster is not running (start it with `make cluster`).")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aikeys_dev.devstack.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "supervise"])
    args = parser.parse_args(argv)
    if args.command == "supervise":
        PID_FILE.write_text(str(os.getpid()))
        try:
            supervise()
        except Exception as err:
            traceback.print_exc()
            print(f"cluster failed: {err}", file=sys.stderr, flush=True)
            return 1
        return 0
    command = {"up": up, "down": down, "status": status}[args.command]
    return command()


if __name__ == "__main__":
    sys.exit(main())

"""The node itself: what runs on it, the network rule, images never pulled, teardown that always runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aikeys_dev.devstack.images import Images
from aikeys_dev.devstack.node.configs import NODE_NAME
from aikeys_dev.devstack.node.running import Node
from aikeys_dev.devstack.node.slots import Slot, live_slots
from aikeys_dev.devstack.node.sysctls import KUBELET_SYSCTLS, SYSCTL_FILE, read_sysctl
from aikeys_dev.devstack.node.teardown import reap_stale

from tests.e2e.conftest import E2E_TIMEOUT, Machine
from tests.integration.kube import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]


def test_node_ready_with_pinned_components(node: Node) -> None:
    info = json.loads(node.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in info["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert info["status"]["nodeInfo"]["kubeletVersion"] == node.binaries.control_plane.k8s_version
    assert info["status"]["nodeInfo"]["kubeProxyVersion"] in ("", node.binaries.control_plane.k8s_version)
    assert info["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.")
    assert {a["address"] for a in info["status"]["addresses"] if a["type"] == "InternalIP"} == {node.ip}
    system = json.loads(node.kubectl("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    running = {p["metadata"]["labels"].get("k8s-app") or p["metadata"]["labels"].get("app") for p in system}
    assert running == {"kube-dns", "traefik"}
    print(f"\nnode memory (every process of the node and its pods): {node.memory_mib():.0f} MiB")


def test_no_route_out_of_the_node(node: Node, machine_before: Machine) -> None:
    # anything not on the node's links is routed into a bridge without ports
    route = node.nsexec("ip", "route", "get", "192.0.2.1").stdout
    assert " dev drop0 " in route, route
    assert node.nsexec("ip", "link", "show", "master", "drop0").stdout.strip() == ""
    # pods may not reach the host side of the veth pair
    assert f"-A FORWARD -o {node.slot.node_link} -j DROP" in node.nsexec("iptables", "-S", "FORWARD").stdout
    # the machine: forwarding off, root firewall untouched, only our namespace added
    now = Machine.now()
    assert now.ip_forward == machine_before.ip_forward == "0"
    assert now.iptables == machine_before.iptables
    assert node.slot.netns in now.netns


def test_cluster_dns_answers_cluster_names_only(node: Node, release: object) -> None:
    pod = json.loads(
        node.kubectl("get", "pods", "-n", "aikeys-mock", "-l", "app=mock-upstream", "-o", "json").stdout
    )["items"][0]["metadata"]["name"]
    script = (
        "import socket\n"
        "print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))\n"
        "try:\n    socket.getaddrinfo('api.openai.com', 443)\nexcept socket.gaierror as e:\n"
        "    print('refused', e.errno)\n"
    )
    out = node.kubectl("exec", "-n", "aikeys-mock", pod, "--", "python", "-c", script).stdout.split()
    assert out[0] == "10.96.0.1"
    assert out[1] == "refused"  # NXDOMAIN from CoreDNS: nothing outside the cluster is asked


def test_images_are_never_pulled(node: Node, release: object) -> None:
    """Every image of the session was imported; a missing one fails at once, at a closed loopback
    port inside the node, and never leaves the machine."""
    pulls_before = node.log("containerd").count("PullImage")
    events = json.loads(node.kubectl("get", "events", "-A", "-o", "json").stdout)["items"]
    assert [e for e in events if e["reason"] == "Pulling"] == []
    assert pulls_before == 0
    node.kubectl("create", "namespace", "e2e-pull", check=False)
    node.kubectl(
        "run",
        "not-imported",
        "-n",
        "e2e-pull",
        "--image=docker.io/library/busybox:1.36",
        "--image-pull-policy=Always",
        "--restart=Never",
    )

    def failed() -> str | None:
        found = json.loads(node.kubectl("get", "events", "-n", "e2e-pull", "-o", "json").stdout)["items"]
        return next((e["message"] for e in found if e["reason"] == "Failed"), None)

    message = wait_for(failed, 60, "the pull to fail")
    assert "127.0.0.1:9" in message, message
    assert node.log("containerd").count("PullImage") >= 1
    node.kubectl("delete", "namespace", "e2e-pull", "--wait=false")


LAUNCHER = """
import signal, sys, time
from pathlib import Path
from aikeys_dev.devstack.node.launch import launch_node
node = launch_node(Path(sys.argv[1]), [Path(sys.argv[2])], addons=False)
try:
    print("READY", node.slot.index, flush=True)  # inside the try: a signal right after it still stops
    while True:
        time.sleep(1)
finally:
    node.stop()
    print("STOPPED", flush=True)
"""


def _launch(tmp_path: Path, images: Images) -> tuple[subprocess.Popen[str], Slot]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path / "node"), str(images.node[0])],  # the pause image
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.startswith("READY"):
            return proc, Slot(int(line.split()[1]))
        seen.append(line)
    tail = "".join(seen[-30:])
    raise AssertionError(f"the launcher exited ({proc.wait()}) before its node was up:\n{tail}")


def _left_behind(slot: Slot, workdir: Path) -> list[str]:
    left = []
    if slot.netns_path.exists():
        left.append(f"network namespace {slot.netns}")
    if Path("/sys/class/net", slot.host_link).exists():
        left.append(f"veth {slot.host_link}")
    left += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{slot.cgroup_root.lstrip('/')}")]
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(workdir) in (proc / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                left.append(f"process {proc.name}")
        except OSError:
            continue
    if slot.lease.exists():
        left.append(str(slot.lease))
    return left


def _sysctls_restored_unless_others_run(before: dict[str, str], mine: Slot) -> None:
    if [s for s in live_slots() if s != mine]:  # another node still needs the kubelet's values
        assert SYSCTL_FILE.exists()
        assert json.loads(SYSCTL_FILE.read_text()) == before
    else:
        assert {name: read_sysctl(name) for name in KUBELET_SYSCTLS} == before
        assert not SYSCTL_FILE.exists()


@pytest.mark.own_node
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_teardown_runs_on_interrupt(tmp_path: Path, images: Images, how: str) -> None:
    before = {name: read_sysctl(name) for name in KUBELET_SYSCTLS}
    if SYSCTL_FILE.exists():
        before = json.loads(SYSCTL_FILE.read_text())
    proc, slot = _launch(tmp_path, images)
    try:
        assert read_sysctl("kernel.panic") == "10"  # the kubelet's value while a node runs
        assert slot.netns_path.exists()
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        proc.wait(60)
        assert proc.stdout is not None
        assert "STOPPED" in proc.stdout.read()  # the launcher's own `finally: node.stop()` ran
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _left_behind(slot, tmp_path) == []
    _sysctls_restored_unless_others_run(before, slot)


@pytest.mark.own_node
def test_a_killed_launcher_is_cleaned_up_by_the_next(tmp_path: Path, images: Images) -> None:
    before = {name: read_sysctl(name) for name in KUBELET_SYSCTLS}
    if SYSCTL_FILE.exists():
        before = json.loads(SYSCTL_FILE.read_text())
    proc, slot = _launch(tmp_path, images)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    # its children died with it, but the namespace, the shims and the pause container are left
    assert slot.netns_path.exists()
    assert reap_stale() == [slot.netns]
    assert _left_behind(slot, tmp_path) == []
    _sysctls_restored_unless_others_run(before, slot)

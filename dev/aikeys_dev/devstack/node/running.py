"""A running node as its users hold it: its control plane, kubectl and helm against it, commands
inside its namespaces, its logs and memory, and `stop()`, which leaves the machine as it was."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.node.binaries import NodeBinaries
from aikeys_dev.devstack.node.configs import INNER
from aikeys_dev.devstack.node.host import run
from aikeys_dev.devstack.node.slots import Slot, lock
from aikeys_dev.devstack.node.sysctls import restore_sysctls_if_last
from aikeys_dev.devstack.node.teardown import attempt, kill_all, pids_in_cgroups, pids_in_netns, teardown_slot
from aikeys_dev.devstack.processes import Child


@dataclass
class Node:
    """A running node; `cp` is its control plane (kubeconfig, kubectl), `url` its Ingress."""

    slot: Slot
    workdir: Path
    binaries: NodeBinaries
    cp: ControlPlane | None = None
    holder: Child | None = None
    children: dict[str, Child] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stopped: bool = False

    @property
    def state(self) -> Path:
        return self.workdir / "node"

    @property
    def ip(self) -> str:
        return self.slot.node_ip

    @property
    def ingress_url(self) -> str:
        return f"http://{self.ip}"

    @property
    def control_plane(self) -> ControlPlane:
        assert self.cp is not None, "the node's control plane is not running"
        return self.cp

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, stdin=stdin, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries.control_plane.helm), *args],
            capture_output=True,
            text=True,
            env=self.control_plane.env(),
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def wrap(self) -> tuple[str, ...]:
        """argv prefix: run inside the node's network and mount namespaces."""
        assert self.holder is not None
        return ("nsenter", f"--net={self.slot.netns_path}", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--")

    def nsexec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's namespaces (e.g. `ip route`, `iptables-save`)."""
        return run(*self.wrap(), *argv, check=check)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        sock = str(INNER / "containerd.sock")
        return self.nsexec("ctr", "--address", sock, "-n", "k8s.io", *args, check=check)

    def memory_mib(self) -> float:
        """Resident memory of every process of the node: control plane, kubelet, containerd and
        its shims (its network namespace) and all containers (its cgroups)."""
        total = 0
        for pid in set(pids_in_netns(self.slot)) | set(pids_in_cgroups(self.slot)):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop everything and leave the machine as it was; safe to call more than once."""
        if self.stopped:
            return  # the slot may belong to another node by now
        self.stopped = True
        errors: list[str] = []
        with lock():
            try:
                for name in ("kubelet", "kube-proxy", "kube-scheduler"):
                    child = self.children.pop(name, None)
                    if child is not None:
                        attempt(errors, partial(child.stop, timeout=5))
                # containers and sandboxes, then containerd and its shims
                attempt(errors, lambda: kill_all(lambda: pids_in_cgroups(self.slot), "node's cgroups"))
                child = self.children.pop("containerd", None)
                if child is not None:
                    attempt(errors, partial(child.stop, timeout=5))
                if self.cp is not None:
                    attempt(errors, self.cp.stop)
                if self.holder is not None:
                    attempt(errors, partial(self.holder.stop, timeout=5))
            finally:
                try:
                    teardown_slot(self.slot)
                finally:
                    restore_sysctls_if_last()
        # the unpacked images (a GiB or more); logs stay
        shutil.rmtree(self.state / "containerd", ignore_errors=True)
        if errors:
            raise RuntimeError(f"stopping the node: {'; '.join(errors)}")

"""The plugin as users install it: the wheel, in a fresh virtualenv, without extras.

`pip install aikeys` must give a working `kubectl-aikeys` with only the command line's dependencies;
the servers come with an extra, the dev tools (aikeys_dev) not at all. The wheel is built from a
copy of the sources (the working tree stays clean); the wheels of the dependencies are kept in
~/.cache/aikeys/wheelhouse so that later runs install offline in seconds.
"""

from __future__ import annotations

import email.parser
import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from aikeys_dev.devstack.binaries import REPO_ROOT, cache_dir
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from tests.integration.kube import apply_allocation, apply_provider, gateway_knows

pytestmark = pytest.mark.integration
NS = "install"
SOURCES = ("pyproject.toml", "README.md", "aikeys", "operator", "gateway")
PIP = (sys.executable, "-m", "pip")
# what a user's shell has, not ours: no PYTHONPATH (or PYTHONHOME …) that would show pip and the plugin
# the checkout's own packages
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
SERVER_ONLY = ("fastapi", "kopf", "redis", "uvicorn", "tiktoken", "cryptography", "prometheus_client")


@dataclass
class Installed:
    bin: Path
    seconds: float

    def run(
        self, cp: ControlPlane, gateway: GatewayProcess, *args: str, exe: str = "kubectl-aikeys"
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **{k: v for k, v in CLEAN_ENV.items() if k in ("HOME", "LANG", "LC_ALL")},
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(cp.kubeconfig),
            "AIKEYS_GATEWAY_URL": gateway.openai_url,
        }
        return subprocess.run(
            [str(self.bin / exe), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    return sorted(meta.get_all("Requires-Dist") or [])


def _build_wheel(workdir: Path) -> Path:
    src = workdir / "src"
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, src / name)
    dist = workdir / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        env=CLEAN_ENV,
        timeout=120,
    )
    [wheel] = dist.glob("aikeys-*.whl")
    return wheel


def _wheelhouse(wheel: Path) -> Path:
    """The wheels of the base dependencies, fetched once per set of requirements."""
    wanted = "\n".join(r for r in _requirements(wheel) if "extra ==" not in r)
    house = cache_dir() / "wheelhouse" / hashlib.sha256(wanted.encode()).hexdigest()[:16]
    if not (house / ".complete").exists():
        house.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house), str(wheel)],
            check=True,
            capture_output=True,
            env=CLEAN_ENV,
            timeout=300,
        )
        (house / wheel.name).unlink(missing_ok=True)  # ours is rebuilt every run
        (house / ".complete").write_text(wanted)
    return house


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("install")
    wheel = _build_wheel(workdir)
    house = _wheelhouse(wheel)
    env_dir = workdir / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    subprocess.run(
        [
            *PIP,
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "-q",
            "--no-index",
            "-f",
            str(house),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        env=CLEAN_ENV,
        timeout=180,
    )
    seconds = time.monotonic() - started
    print(f"\nwheel built and installed into a fresh virtualenv in {seconds:.1f}s")
    return Installed(env_dir / "bin", seconds)


def test_the_base_install_is_the_command_line(installed: Installed) -> None:
    python = installed.bin / "python"
    for module in SERVER_ONLY:
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True, check=False, env=CLEAN_ENV
        )
        assert probe.returncode != 0, f"{module} came with the base install"
    for exe in ("kubectl-aikeys", "aikeys"):
        result = subprocess.run(
            [str(installed.bin / exe), "--help"], capture_output=True, text=True, check=False, env=CLEAN_ENV
        )
        assert result.returncode == 0, result.stderr
        assert "keys" in result.stdout and "usage" in result.stdout
    for args in (["keys", "create", "--help"], ["usage", "--help"]):
        result = subprocess.run(
            [str(installed.bin / "aikeys"), *args], capture_output=True, text=True, check=False, env=CLEAN_ENV
        )
        assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr
    # the dev tools are not the user's: no such commands, and not a file of them in the install
    for command in ("dev", "mock-upstream"):
        result = subprocess.run(
            [str(installed.bin / "aikeys"), command, "--help"],
            capture_output=True,
            text=True,
            check=False,
            env=CLEAN_ENV,
        )
        assert result.returncode != 0 and f"No such command '{command}'" in result.stderr
    assert not (installed.bin / "aikeys-dev").exists()
    probe = subprocess.run(
        [str(python), "-c", "import aikeys_dev"], capture_output=True, check=False, env=CLEAN_ENV
    )
    assert probe.returncode != 0


def test_keys_and_usage_from_the_installed_plugin(
    installed: Installed,
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    mock_upstream_process: MockUpstreamProcess,
) -> None:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    apply_provider(cp, NS, mock_upstream_process.url, {"chat": ("1.00", "2.00")})
    apply_allocation(cp, NS, "team", "10.00")
    created = installed.run(cp, gateway, "-n", NS, "keys", "create", "pat", "--allocation", "team")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("aik_") and "shown once" in created.stderr
    gateway_knows(gateway.openai_url, key)
    listing = installed.run(cp, gateway, "-n", NS, "keys", "list", "-o", "json")
    assert listing.returncode == 0, listing.stderr
    assert '"name": "pat"' in listing.stdout
    usage = installed.run(cp, gateway, "-n", NS, "usage", "--days", "7", "-o", "json")
    assert usage.returncode == 0, usage.stderr
    assert '"requests": 0' in usage.stdout  # a fresh namespace has spent nothing
    revoked = installed.run(cp, gateway, "-n", NS, "keys", "revoke", "pat")
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked {NS}/pat." in revoked.stdout

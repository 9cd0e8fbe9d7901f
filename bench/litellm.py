"""LiteLLM's proxy, the comparison: installed from PyPI into a cached virtualenv of its own, run as a
passthrough (one model, no master key, no database, no budgets, no callbacks), one worker.

    python -m bench.litellm            # install it if missing, print where

The virtualenv lives outside the repo, in ~/.cache/aikeys/litellm/venv (AIKEYS_CACHE moves it), and is
created only when missing; LiteLLM is never one of the project's own dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.binaries import cache_dir
from aikeys_dev.devstack.processes import Child, free_port

VERSION = "1.108.7"
# Nothing it does may leave the machine: no telemetry, and the files LiteLLM would otherwise fetch
# from raw.githubusercontent.com / docs.litellm.ai (the model cost map, at import) read from the
# package itself. Checked with `strace -f -e trace=connect`: its only connections went to the upstream.
OFFLINE_ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOG": "ERROR",
    "DISABLE_SCHEMA_UPDATE": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "DO_NOT_TRACK": "1",
}
CONFIG = """model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: sk-upstream
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
  json_logs: false
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  dangerously_permit_weak_or_unset_master_key: true  # passthrough on loopback: no keys at all
  disable_spend_logs: true
  disable_adding_master_key_hash_to_db: true
"""


def venv_dir() -> Path:
    return cache_dir() / "litellm" / "venv"


def install() -> Path:
    """The `litellm` executable, installing litellm[proxy]==VERSION first when it is missing."""
    venv = venv_dir()
    exe, marker = venv / "bin" / "litellm", venv / f".installed-{VERSION}"
    if exe.exists() and marker.exists():
        return exe
    start = time.monotonic()
    print(
        f"[bench] installing litellm[proxy]=={VERSION} into {venv} (once; a few hundred MB) ...", flush=True
    )
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off"]
    subprocess.run([*pip, "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"litellm[proxy]=={VERSION}"], check=True)  # pip's own lines are the progress
    marker.write_text(f"installed in {time.monotonic() - start:.0f}s\n")
    print(f"[bench] litellm installed in {time.monotonic() - start:.0f}s", flush=True)
    return exe


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
        return int(resp.status) == 200


@dataclass
class LiteLLMProxy:
    """`litellm --config` on a free loopback port, one worker, in front of `api_base`."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.child.stop()


def launch_litellm(workdir: Path, model: str, api_base: str, timeout: float = 120) -> LiteLLMProxy:
    exe = install()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(CONFIG.format(model=model, api_base=api_base))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "DATABASE_URL"))}
    env.update(OFFLINE_ENV, PATH=f"{exe.parent}:{env.get('PATH', '')}")
    argv = [
        str(exe),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    child = Child(f"litellm-{port}", argv, workdir / "litellm.log", env=env).start()
    proxy = LiteLLMProxy(child, port)
    child.wait_until(lambda: _ok(f"{proxy.url}/health/liveliness"), timeout=timeout, what="live")
    return proxy


if __name__ == "__main__":
    print(install())

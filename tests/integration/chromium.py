"""A real headless Chromium for the tests that drive web pages: Debian's browser (never a downloaded
build), driven by playwright-core through tests/browser/driver.mjs, one JSON command per line.
tools/browser-tests.sh installs both when missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aikeys_dev.devstack.binaries import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def playwright_dir() -> Path:
    """playwright-core in the cache, and Debian's chromium (tools/browser-tests.sh, which `make setup`
    runs too, installs what is missing). Never skipped: a failed install fails the test."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "browser-tests.sh")],
        stdout=subprocess.PIPE,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"tools/browser-tests.sh failed (exit {result.returncode})")
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / ".complete").is_file() and CHROMIUM.exists()
    return folder


class Browser:
    """tests/browser/driver.mjs: one JSON command per line, one answer per line."""

    def __init__(self, playwright_dir: Path, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "node_modules").symlink_to(playwright_dir / "node_modules")
        shutil.copy(REPO_ROOT / "tests" / "browser" / "driver.mjs", workdir)
        self.proc = subprocess.Popen(
            ["node", str(workdir / "driver.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=workdir,
        )
        self.ids = 0

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.ids += 1
        self.proc.stdin.write(json.dumps({"id": self.ids, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver exited ({self.proc.wait()}) during {op}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise AssertionError(f"{op} {args}: {answer['error']}")
        return answer.get("value")  # undefined in JavaScript: None

    def close(self) -> None:
        try:
            self("close")
        finally:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def browser(playwright_dir: Path, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(playwright_dir, tmp_path / "driver")
    profile = tempfile.mkdtemp(prefix="aikeys-chromium-")  # a fresh --user-data-dir
    try:
        b("launch", executable=str(CHROMIUM), userDataDir=profile)
        yield b
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)

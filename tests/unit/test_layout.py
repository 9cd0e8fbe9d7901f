"""The repository layout keeps the standard library importable and the packages mapped."""

from __future__ import annotations

import subprocess
import sys

from aikeys.devstack.binaries import REPO_ROOT


def test_operator_folder_does_not_shadow_stdlib() -> None:
    # Run from the repository root, where '' (the cwd) is first on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", "import operator, kopf; print(operator.__file__)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" not in out
    assert not out.startswith(str(REPO_ROOT))


def test_console_scripts_have_help() -> None:
    for args in (["--help"], ["mock-upstream", "--help"], ["dev", "--help"], ["dev", "up", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "aikeys.cli.main", *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout

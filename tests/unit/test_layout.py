"""The repository layout keeps the standard library importable and the packages mapped."""

from __future__ import annotations

import subprocess
import sys

from aikeys_dev.devstack.binaries import REPO_ROOT


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
    commands = [
        ("aikeys.cli.main", ["--help"]),
        ("aikeys_dev.cli", ["--help"]),
        ("aikeys_dev.cli", ["mock-upstream", "--help"]),
        ("aikeys_dev.cli", ["up", "--help"]),
    ]
    for module, args in commands:
        result = subprocess.run(
            [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_the_users_command_line_has_no_dev_tools() -> None:
    """`aikeys` / `kubectl aikeys` is what users install: the dev stack and the mock are `aikeys-dev`'s."""
    listed = subprocess.run(
        [sys.executable, "-m", "aikeys.cli.main", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = listed[listed.index("Commands:") :].split()
    assert "keys" in commands and "usage" in commands
    assert "dev" not in commands and "mock-upstream" not in commands
    dev = subprocess.run(
        [sys.executable, "-m", "aikeys_dev.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert {"up", "down", "status", "mock-upstream"} <= set(dev[dev.index("Commands:") :].split())

"""Running commands on this machine and waiting for something to become true: what every step of a
node's bring-up and teardown does."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from aikeys_dev.devstack.processes import StartupError


def run(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def wait_until(ready: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll `ready` until it returns something true; seconds it took."""
    start = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - start < timeout:
        try:
            if ready():
                return time.monotonic() - start
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            last = err
        time.sleep(interval)
    raise StartupError(f"{what} not ready after {timeout:.0f}s" + (f" (last error: {last})" if last else ""))

"""Open WebUI (PyPI `open-webui`) for the client suite, started once per test session.

tools/open-webui.sh installs it into a virtualenv in the cache (`make setup` does it too: it is
7.3 GB). It runs against the session's gateway with an AI key of its own, `open-webui`, which may
use one model of the namespace's two (`CHAT_ONLY`, not `NATIVE`) and charges an allocation of its
own. `environment` below is the whole configuration, the one docs/clients.md shows: one OpenAI
connection (the gateway), no Ollama, no arena models, no sign-in (its API still wants a token:
`sign_in`), and nothing that reaches the network — OFFLINE_MODE (no model hub, no update check),
no telemetry, every other host behind a proxy that only records (`ProxyTrap`). It still probes
Ollama's ports on 127.0.0.1, which is loopback. A `PeerWatch` watches its connections while it
starts and while a test uses it (not while it idles through the rest of the session).

Start-up takes 15–35 s here (a first start runs its database migrations)."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.processes import Child, free_port
from aikeys_dev.devstack.services import GatewayProcess

from aikeys import connect
from tests.clients.harness import CHAT_ONLY, NS, ROOT, Metered, ProxyTrap, Tenant, base_env, exports
from tests.clients.sockets import PeerWatch
from tests.integration.kube import apply_allocation, create_key, gateway_knows

VERSION = "0.12.4"
KEY = "open-webui"  # its AIKey, and the Allocation only that key charges
MODELS = [CHAT_ONLY]  # what the key may use (the namespace also offers NATIVE)
INSTALL_TIMEOUT = 1500  # a first install took 3 minutes on an idle machine, 11 on a loaded one
STARTUP_TIMEOUT = 300  # 15–35 s here; a very loaded 2-core machine has taken 90 s


def environment(base_url: str, key: str, data_dir: Path) -> dict[str, str]:
    """Open WebUI's settings for the gateway (beside PATH, HOME and a secret key): the Connect
    page's server environment (aikeys.connect) pasted under the key's snippet, plus what keeps it
    offline and alone."""
    shown = connect.guide(connect.Tool.OPEN_WEBUI, connect.Target(base_url, (CHAT_ONLY,), key=key))
    pasted = exports(connect.key_snippet(connect.Target(base_url, (CHAT_ONLY,), key=key)))
    return exports(shown.snippets[0], pasted) | {
        "ENABLE_EVALUATION_ARENA_MODELS": "false",  # the menu lists the gateway's models only
        "WEBUI_AUTH": "false",  # one user, no sign-up
        "DATA_DIR": str(data_dir),
        "OFFLINE_MODE": "true",  # no model hub downloads, no update check
        "RAG_EMBEDDING_ENGINE": "openai",  # no local embedding model to load
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
    }


@dataclass
class OpenWebUI:
    url: str
    key: str  # the AI key it calls the gateway with
    child: Child
    trap: ProxyTrap
    watches: list[PeerWatch]  # its start-up's, then each test's
    charged: list[Metered]  # what each test saw charged to its allocation, for the usage page

    def sign_in(self) -> str:
        """Its API's token: even without sign-in (WEBUI_AUTH=false) the API wants one, and signing
        in with an empty email and password gives it (for the one user, admin@localhost)."""
        req = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.url}/api/v1/auths/signin",
            data=json.dumps({"email": "", "password": ""}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            token: str = json.load(resp)["token"]
        return token

    def assert_loopback_only(self) -> None:
        assert self.trap.asked == [], self.trap.asked  # no HTTP(S) request to another host
        for watch in self.watches:  # no connection beyond loopback
            assert watch.samples > 0 and watch.elsewhere() == [], watch.elsewhere()


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:  # noqa: S310 - loopback
        return int(resp.status) == 200


@pytest.fixture(scope="session")
def open_webui_dir() -> Path:
    """The virtualenv tools/open-webui.sh installs (when missing). Never skipped: a failed
    install fails the tests that need it."""
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "open-webui.sh")],
        stdout=subprocess.PIPE,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"tools/open-webui.sh failed (exit {result.returncode}); its output is above")
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / ".complete").is_file() and (folder / "bin" / "open-webui").is_file(), folder
    assert folder.name == VERSION, f"tools/open-webui.sh installs {folder.name}, the tests expect {VERSION}"
    return folder


@pytest.fixture(scope="session")
def open_webui_server(
    open_webui_dir: Path,
    tenant: Tenant,  # the namespace, its providers and the session's gateway
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenWebUI]:
    apply_allocation(control_plane, NS, KEY, "100.00")
    models = json.dumps(MODELS)
    key = create_key(control_plane, NS, KEY, KEY, f"models: {models}")
    gateway_knows(tenant.base_url, key)
    root = tmp_path_factory.mktemp("open-webui")
    home, work = root / "home", root / "work"
    work.mkdir()
    trap = ProxyTrap()
    env = (
        base_env(home)
        | environment(tenant.base_url, key, root / "data")
        | {
            "PATH": f"{open_webui_dir / 'bin'}:/usr/bin:/bin",
            "WEBUI_SECRET_KEY": secrets.token_hex(32),  # else it writes one into the working folder
        }
        | trap.env()
    )
    port = free_port()
    program = open_webui_dir / "bin" / "open-webui"
    # in a folder of its own (`env -C`, as Child takes no working folder): Open WebUI puts the working
    # folder and its parent on its import path
    argv = ["env", "-C", str(work), str(program), "serve", "--host", "127.0.0.1", "--port", str(port)]
    child = Child("open-webui", argv, root / "open-webui.log", env=env).start()
    startup = PeerWatch(child.pid)  # Child leads its own process group
    try:
        url = f"http://127.0.0.1:{port}"
        seconds = child.wait_until(lambda: _healthy(url), STARTUP_TIMEOUT, "healthy")
        startup.close()
        print(f"\nOpen WebUI {VERSION} up in {seconds:.1f}s")
        yield OpenWebUI(url, key, child, trap, [startup], [])
    finally:
        child.stop()
        startup.close()
        trap.close()


@pytest.fixture
def open_webui(open_webui_server: OpenWebUI) -> Iterator[OpenWebUI]:
    """The session's Open WebUI, its connections watched during the test."""
    watch = PeerWatch(open_webui_server.child.pid)
    open_webui_server.watches.append(watch)
    try:
        yield open_webui_server
    finally:
        watch.close()

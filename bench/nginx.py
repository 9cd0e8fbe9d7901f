"""nginx from Debian as the static upstream: a fixed chat completion, as fast as an upstream can be.

One worker, no access log, listening on a free loopback port; the process stays in the foreground
(`daemon off`) as our child, with its pid file, error log and temp dirs in a work dir.
`/v1/chat/completions` answers any POST with the JSON the mock upstream would send for a 16-token
answer (usage block included, so the gateway settles real token counts), `/v1/models` the list.
`/sse/v1/chat/completions` answers the same completion streamed (nginx cannot tell a streamed
request from a non-streamed one by its body, hence its own path; a provider's baseURL `…/sse/v1`):
one static `text/event-stream` body of `chat.completion.chunk` events as OpenAI sends them with
`stream_options.include_usage` — the role, four content chunks of four tokens (nginx caps a config
string at 4 KB, so not one chunk per token), the finish, the usage chunk (the same token counts)
and `data: [DONE]`. Static, so a request's latency is its time to first byte plus a few µs.

    python -m bench.nginx     # start it, print its URL and a request, stop on Ctrl-C
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.processes import Child, free_port

MODEL = "gpt-4o-mini"
CONTENT = "Hello from the aikeys mock upstream model server Hello from the aikeys mock upstream model server"
COMPLETION = {
    "id": "chatcmpl-nginxstatic0000000000000",
    "object": "chat.completion",
    "created": 1764288000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": CONTENT, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 16,
        "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_aikeysnginx",
}
USAGE = COMPLETION["usage"]
CHUNK = {
    "id": COMPLETION["id"],
    "object": "chat.completion.chunk",
    "created": COMPLETION["created"],
    "model": MODEL,
    "service_tier": "default",
    "system_fingerprint": COMPLETION["system_fingerprint"],
}
_WORDS = CONTENT.split(" ")  # 16 words, 16 tokens as in the usage
PIECES = [(" " if i else "") + " ".join(_WORDS[i : i + 4]) for i in range(0, len(_WORDS), 4)]


def _chunk(delta: dict[str, object], finish_reason: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {**CHUNK, "choices": [choice], "usage": None}


STREAM_EVENTS: list[dict[str, object]] = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    *(_chunk({"content": piece}) for piece in PIECES),
    _chunk({}, "stop"),
    {**CHUNK, "choices": [], "usage": USAGE},
]
MODELS = {
    "object": "list",
    "data": [{"id": MODEL, "object": "model", "created": 1764288000, "owned_by": "nginx"}],
}
CONFIG = """daemon off;
master_process on;
worker_processes 1;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    default_type application/json;
    location = /v1/chat/completions {{ return 200 '{completion}'; }}
    location = /v1/models {{ return 200 '{models}'; }}
    location = /sse/v1/chat/completions {{
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      return 200 '{stream}';
    }}
    location = /sse/v1/models {{ return 200 '{models}'; }}
    location / {{ return 404 '{{"error": {{"message": "not found"}}}}'; }}
  }}
}}
"""


def _compact(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"))
    assert "'" not in text and "$" not in text and "\\" not in text  # nothing nginx would interpret
    return text


def sse_body() -> str:
    """The streamed answer: each event `data: <compact json>` and a blank line, then [DONE]."""
    return "".join(f"data: {_compact(event)}\n\n" for event in STREAM_EVENTS) + "data: [DONE]\n\n"


@dataclass
class Nginx:
    child: Child
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        """Base URL as OpenAI clients take it (…/v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def sse_url(self) -> str:
        """Base URL of the streamed answer (…/sse/v1)."""
        return f"http://127.0.0.1:{self.port}/sse/v1"

    def stop(self) -> None:
        self.child.stop()  # SIGTERM to its process group: nginx's fast shutdown, then wait
        shutil.rmtree(self.workdir, ignore_errors=True)


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
        return int(resp.status) == 200


def launch_nginx(timeout: float = 20) -> Nginx:
    binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError("nginx not found: run `make setup` (Debian package nginx-light)")
    workdir = Path(tempfile.mkdtemp(prefix="aikeys-nginx-"))
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(
        CONFIG.format(
            user="user root;\n" if os.geteuid() == 0 else "",  # as root, else workers would be nobody
            dir=workdir,
            port=port,
            completion=_compact(COMPLETION),
            models=_compact(MODELS),
            stream=sse_body(),  # its newlines stay literal inside the quoted string
        )
    )
    argv = [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(config)]
    child = Child(f"nginx-{port}", argv, workdir / "stdout.log").start()
    nginx = Nginx(child, port, workdir)
    child.wait_until(lambda: _ok(f"{nginx.url}/models"), timeout=timeout)
    return nginx


if __name__ == "__main__":
    n = launch_nginx()
    print(
        f"nginx at {n.url}; try:\n  curl -d '{{}}' {n.url}/chat/completions\n"
        f"  curl -Nd '{{}}' {n.sse_url}/chat/completions\nCtrl-C stops it."
    )
    try:
        while n.child.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        n.stop()

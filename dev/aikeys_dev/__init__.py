"""aikeys_dev: the developer's tools, apart from what users install and run.

`devstack` stands the real components up on loopback (the control plane, Redis, the operator and
the gateway as child processes; the local dev stack of `make dev`; a real one-node cluster for
`make cluster` and tests/e2e), `mockupstream` is a deterministic OpenAI-compatible model server,
and `cli` is the `aikeys-dev` command over both. It is its own distribution (dev/pyproject.toml,
installed editable by `make venv`): the image and the user's `aikeys` / `kubectl aikeys` hold none
of it, and nothing in `aikeys`, `aikeys_gateway` or `aikeys_operator` imports it
(tests/unit/test_layering.py).
"""

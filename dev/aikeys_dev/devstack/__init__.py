"""Real components on loopback, for tests and `make dev`.

`binaries` finds (and builds on first use) the Go-built control plane, `pki` makes its
certificates, `processes` runs children that cannot outlive us, `controlplane` and `redis`
start the servers, `stack` composes the dev stack.
"""

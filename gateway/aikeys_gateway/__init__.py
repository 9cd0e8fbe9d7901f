"""The aikeys gateway: an OpenAI-compatible API that authenticates AI keys, meters every
request against its Allocation and forwards it to the provider.

`informers` mirror the CRs (list + watch), `catalog` indexes them for O(1) lookups, `auth`
checks keys, `routing` resolves model IDs, `proxy` runs a request (reserve → upstream →
settle), `streaming` rewrites SSE, `errors` shapes OpenAI errors, `metrics` exports
Prometheus series, `app` wires the routes and `main` is the `aikeys-gateway` command.
"""

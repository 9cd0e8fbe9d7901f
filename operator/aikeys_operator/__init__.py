"""The aikeys operator (kopf): mints and rotates AI keys, reports spend and state.

`handlers` registers thin kopf handlers; the work is in `keys` (AIKey life), `allocations`
(budget status from the ledger, restored when Redis lost it), `providers` (AIProvider status,
credential projection, overrun notices), `secrets` (the Secret that holds a key), `conditions`
and `metrics` (Prometheus). `main` is the `aikeys-operator` command.
"""

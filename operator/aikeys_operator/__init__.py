"""The aikeys operator (kopf): mints and rotates AI keys, reports spend and state.

`handlers` registers thin kopf handlers; the work is in `keys` (AIKey life), `allocations`
(budget status from the ledger), `providers` (AIProvider status), `secrets` (the Secret that
holds a key) and `conditions`. `main` is the `aikeys-operator` command.
"""

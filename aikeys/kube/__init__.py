"""A small async Kubernetes API client (aiohttp), shared by the operator, gateway and CLI.

`config` finds credentials (kubeconfig or in-cluster service account), `client` makes
requests, lists and watches. Only what aikeys needs: no code generation, no models.
"""

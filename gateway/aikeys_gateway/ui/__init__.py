"""The web pages, under /ui: sign-in, AI Keys, AI Usage and Connect (off unless AIKEYS_UI=true;
the chart turns them on).

Every action runs as the signed-in person: their Kubernetes bearer token goes to the API server
with each request (`person.py`), so RBAC — and the key-owner admission policy — decide as they
would for `kubectl`. Who may read which namespace's usage is the same SubjectAccessReview as for
`/api/usage`, and the numbers come from the same report (`usage.report`) over the gateway's caches
and the ledger. Someone signed in with an AI key sees that key, its budget and its usage only.

Sessions (`session.py`): the credential sealed into an HttpOnly, SameSite=Strict cookie (Secure
over TLS) — nothing stored server-side; every POST carries the session's CSRF token and must come
from this origin; credentials travel only in POST bodies and cookies, never in URLs, and are never
logged. Pages carry a strict Content-Security-Policy (scripts and styles from /ui/static only).

AI Keys shows the person's own keys first, with Disable / Rotate / Revoke only where the admission
policy would let them act (their own keys, or every key with the owner exception). Connect gives
every tool's settings for this gateway from `aikeys.connect`, the generator the client tests run.

The routes: `routes.py`; the handlers: `web.py`; the markup: `pages.py`, `connecting.py`; the
settings: `config.UISettings`.
"""

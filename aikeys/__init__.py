"""aikeys: the shared core of the aikeys gateway and operator.

Pure code that both components import lives here (resource models, key format, pricing,
periods, ledger scripts), plus the Kubernetes client and the user's command line. The tools
that stand the real components up for development and tests, and the mock OpenAI upstream,
are not part of it: they are the separate package `aikeys_dev` (dev/), never in the image.
"""

__version__ = "0.1.0"

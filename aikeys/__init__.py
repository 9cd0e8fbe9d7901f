"""aikeys: the shared core of the aikeys gateway and operator.

Pure code that both components import lives here (resource models, key format, pricing,
periods, ledger scripts), with the developer tooling that stands the real components up
(`aikeys.devstack`) and the mock OpenAI upstream (`aikeys.mockupstream`).
"""

__version__ = "0.1.0"

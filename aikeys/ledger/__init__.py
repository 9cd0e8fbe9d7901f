"""The ledger: atomic budgets and token metering in Redis.

`names` builds the Redis keys of an allocation (one hash tag each), `scripts` holds the Lua
scripts (reserve → settle | release, extend), `store` calls them through redis-py asyncio, and
`estimate` bounds what a request may cost before it is sent. See docs/ledger.md.
"""

"""The real redis-server fixture answers and can be restarted on its port."""

from __future__ import annotations

import pytest
import redis
from aikeys_dev.devstack.redis import RedisServer

pytestmark = pytest.mark.integration


def test_redis_answers(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    client.set("aikeys:probe", "1")
    assert client.get("aikeys:probe") == b"1"
    info = client.info("persistence")
    assert info["aof_enabled"] == 0  # tests run without persistence
    assert client.config_get("save") == {"save": ""}

"""The Redis connection for bookkeeping kept beside the task results: dead letters and chapter progress."""

from __future__ import annotations

from functools import cached_property


class RedisBookkeeping:
    """Connects lazily (so importing stays cheap) to the result backend's Redis; disabled for other backends."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    @cached_property
    def _client(self):
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)

    @property
    def enabled(self) -> bool:
        return self.redis_url.startswith(("redis://", "rediss://", "unix://"))

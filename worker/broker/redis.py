"""Redis connections for bookkeeping beside the task results (dead letters, chapter progress, delivery counts), for a
plain Redis or one watched by Sentinel.

URLs are the ones Celery and kombu take: ``redis://``, ``rediss://``, ``unix://``, or Sentinel's
``sentinel://host:26379;sentinel://host2:26379/0`` with the master's name from ``F5_SENTINEL_MASTER``. A Sentinel
client asks the sentinels for the current master on every reconnect, so it follows a failover by itself.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from redis.exceptions import (
    BusyLoadingError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

if TYPE_CHECKING:
    import redis
    from typing_extensions import Self

    from worker.settings import BrokerSettings

SOCKET_TIMEOUT_S = 5

#: Redis's answers that a moment later may be different: out of memory (``noeviction`` at ``maxmemory``), loading its
#: data, a replica being promoted, a script running. redis-py raises most of them as classes of their own and strips
#: the code from the message ("command not allowed when used memory > 'maxmemory'"), so both are checked.
PASSING_REPLIES = ("OOM ", "LOADING ", "BUSY ", "READONLY ", "MASTERDOWN ", "TRYAGAIN ")
PASSING_ERRORS = (OutOfMemoryError, BusyLoadingError, ReadOnlyError, MasterDownError, TryAgainError)

#: What a server says when it will never run a script (as opposed to a passing refusal): scripting disabled, an ACL
#: without EVAL, a Redis-compatible server without Lua.
SCRIPTS_REFUSED = ("unknown command", "NOPERM", "NOSCRIPT", "scripting", "script is disabled", "not allowed",
                   "no permissions")


def passing_refusal(exc: BaseException) -> bool:
    """Whether Redis refused a command for a while (retry later), rather than for good."""
    text = str(exc)
    # a Redis before 7 reports a refusal inside a script as a script error quoting it ("... -OOM command not allowed
    # when used memory > 'maxmemory' ...")
    return isinstance(exc, PASSING_ERRORS) or text.startswith(PASSING_REPLIES) or "-OOM " in text


def refuses_scripts(exc: BaseException) -> bool:
    """Whether this error means the server will not run scripts at all (so a caller falls back to plain commands)."""
    if passing_refusal(exc):
        return False
    text = str(exc).lower()
    return isinstance(exc, NoPermissionError) or any(marker.lower() in text for marker in SCRIPTS_REFUSED)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text: bytes from the clients here, str from one that decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def sentinel_nodes(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The sentinels of a ``sentinel://`` URL (several separated by ``;``), the database and the master password."""
    nodes, db, password = [], 0, None
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ValueError(f"{part!r} is not a sentinel://host:port URL")
        nodes.append((parsed.hostname, parsed.port or 26379))
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
        if parsed.password:
            password = unquote(parsed.password)
    return nodes, db, password


def redis_client(url: str, master_name: str | None = None) -> redis.Redis:
    """A redis-py client for a Redis or a Sentinel URL."""
    import redis

    if not is_sentinel(url):
        return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
    if not master_name:
        raise ValueError(f"{url.split(';')[0]}…: a Sentinel URL needs the master's name (F5_SENTINEL_MASTER)")
    from redis.sentinel import Sentinel

    nodes, db, password = sentinel_nodes(url)
    sentinel = Sentinel(nodes, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
    master: redis.Redis = sentinel.master_for(master_name, db=db, password=password, socket_timeout=SOCKET_TIMEOUT_S,
                                              socket_connect_timeout=SOCKET_TIMEOUT_S, retry_on_timeout=True)
    return master


class RedisBookkeeping:
    """Connects lazily (so importing stays cheap) to the result backend's Redis; disabled for other backends."""

    def __init__(self, redis_url: str, master_name: str | None = None) -> None:
        self.redis_url = redis_url
        self.master_name = master_name

    @classmethod
    def for_results(cls, broker: BrokerSettings) -> Self:
        """On the result backend's Redis (``worker.settings.BrokerSettings``), where clients look for it."""
        return cls(broker.resolved_result_backend, broker.sentinel_master)

    @cached_property
    def _client(self) -> redis.Redis:
        return redis_client(self.redis_url, self.master_name)

    @property
    def enabled(self) -> bool:
        return self.redis_url.startswith(("redis://", "rediss://", "unix://", "sentinel://"))

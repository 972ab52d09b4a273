"""What the broker's mixins (``worker.broker.fetch``, ``worker.broker.transport``) use of kombu's Redis transport
beyond its public API, declared for the type checker.

kombu's stubs (celery-types) leave out the private methods and attributes these mixins override or call, so the
checker sees them here, with the signatures of the kombu version the project pins. At run time both bases are
``object``: the mixins reach kombu's own code through ``super()`` and the concrete classes' other bases
(``worker.broker.transport``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombu.connection import Connection
    from kombu.transport import redis as kombu_redis

    from worker.broker.fetch import FetchedQoS

    class RedisChannel(kombu_redis.Channel):
        connection_errors: tuple[type[BaseException], ...]  # set per channel from its transport
        _queue_cycle: Any  # kombu's queue order (round robin by default): consume(n), rotate(queue)
        _expires: dict[str, int]  # queues declared with x-expires
        _in_poll: Any  # the redis connection a BRPOP (or our fetch) was sent on, while it is out
        _brpop_sent_at: float

        @property
        def qos(self) -> FetchedQoS: ...  # the channels here are built with a FetchedQoS (or a subclass)

        def _brpop_start(self, timeout: int | None = None) -> None: ...
        def _brpop_read(self, **options: Any) -> bool: ...
        def _put(self, queue: str, message: Any, **kwargs: Any) -> None: ...
        def _get(self, queue: str, timeout: float | None = None) -> Any: ...
        def _q_for_pri(self, queue: str, pri: int) -> str: ...
        def _connparams(self, asynchronous: bool = False) -> dict[str, Any]: ...
        def _create_client(self, asynchronous: bool = False) -> Any: ...
        def _on_connection_disconnect(self, connection: Any) -> None: ...
        def _flush_brpop_reauth(self) -> None: ...

    class RedisTransport(kombu_redis.Transport):
        client: Connection  # None only for a transport built without a connection, which none here is
else:
    RedisChannel = RedisTransport = object

__all__ = ["RedisChannel", "RedisTransport"]

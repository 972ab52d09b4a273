"""kombu's Redis transports (plain and Sentinel), hardened for a worker that holds many messages at once.

- A foreign or corrupted item in a queue list makes kombu's JSON decoding raise inside the worker's event loop, and
  the worker exits ("Unrecoverable error: JSONDecodeError"). BRPOP has already removed the item by then, so these
  subclasses log it and carry on instead: the poison message is rejected, the worker keeps serving.
- When the broker connection drops while messages are unacknowledged (a threads-pool worker always holds some), the
  consumer closes its channel and kombu tries to put those messages back in the queue through a connection that is
  already gone: ``AttributeError: 'NoneType' object has no attribute 'hostname'``, which is not a connection error, so
  the worker dies instead of reconnecting. Here that attempt raises a connection error, which kombu ignores as it
  should: the messages stay in Redis's unacked set, and the visibility-timeout sweep restores them if their tasks do
  not finish.
- A message is taken off its queue and recorded as unacknowledged in one atomic step (``worker.broker.fetch``), not
  popped by BRPOP and recorded by a second command: nothing is lost if the worker dies or the network fails between
  the two.
- Where kombu's BRPOP still serves (no-ack reply queues, a Redis that refuses scripts) and the connection fails after
  the pop but before the record, kombu raises and drops the message, of which Redis holds no copy any more. Here the
  worker keeps it and runs it, and the log says which job was in that state.
- A message put back in its queue (a task that could not publish its retry) when Redis refuses the write (out of
  memory) made kombu raise in the worker's event loop, and the worker stopped. Here the message stays recorded as
  unacknowledged in Redis, where the visibility-timeout sweep finds it, and the worker forgets it and carries on.

Everything else is kombu's own code, reached through ``super()``.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.broker.fetch import AtomicFetch, FetchedQoS, TickingTransport
from worker.broker.kombu_private import RedisChannel

log = logging.getLogger(__name__)


class QoS(FetchedQoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # The message is out of the queue and not in the unacked set: this process holds the only copy. Deliver
            # it anyway (kombu's in-memory bookkeeping only), rather than raise and lose it.
            task = (message.headers or {}).get("id", delivery_tag)
            log.warning("message %s was handed out as the broker connection failed (%s); it is not recorded as "
                        "unacknowledged in Redis, so it runs here without a copy in the broker", task, exc)
            virtual.QoS.append(self, message, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except RedisError as exc:
            # The message is still recorded as unacknowledged (the restore is one transaction): the sweep brings it
            # back after the visibility timeout. This worker stops holding it, and keeps serving.
            log.warning("could not put message %s back in its queue (%s); it stays recorded as unacknowledged and "
                        "comes back after the visibility timeout", delivery_tag, exc)
            virtual.QoS.ack(self, delivery_tag)


class _Hardened(RedisChannel):
    QoS: type[kombu_redis.QoS] = QoS

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # the connection this channel belonged to is closed
            raise RedisConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return super()._brpop_read(**options)
        except ValueError as exc:  # json.JSONDecodeError: the item was popped but is not a message envelope
            log.error("rejected a queue item that is not a JSON message envelope: %s", exc)
            raise Empty() from None

    def _get(self, queue: str, timeout: float | None = None) -> Any:  # kombu's Redis channel takes no timeout
        try:
            return super()._get(queue)
        except ValueError as exc:
            log.error("rejected a queue item of %s that is not a JSON message envelope: %s", queue, exc)
            raise Empty() from None


class Channel(_Hardened, AtomicFetch, kombu_redis.Channel):
    pass


class Transport(TickingTransport, kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_Hardened, AtomicFetch, kombu_redis.SentinelChannel):
    from_transport_options = (*kombu_redis.SentinelChannel.from_transport_options, "idle_poll_interval")


class SentinelTransport(TickingTransport, kombu_redis.SentinelTransport):
    Channel = SentinelChannel

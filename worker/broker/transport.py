"""kombu's Redis transports (plain and Sentinel), hardened against queue items that are not JSON.

A foreign or corrupted item in a queue list makes kombu's JSON decoding raise inside the worker's event loop, and the
worker exits ("Unrecoverable error: JSONDecodeError"). BRPOP has already removed the item by then, so these subclasses
log it and carry on instead: the poison message is rejected, the worker keeps serving. Everything else is kombu's
own code, reached through ``super()``.
"""

from __future__ import annotations

import logging
from queue import Empty

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class _Hardened:
    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        except ValueError as exc:  # json.JSONDecodeError: the item was popped but is not a message envelope
            log.error("rejected a queue item that is not a JSON message envelope: %s", exc)
            raise Empty() from None

    def _get(self, queue):
        try:
            return super()._get(queue)
        except ValueError as exc:
            log.error("rejected a queue item of %s that is not a JSON message envelope: %s", queue, exc)
            raise Empty() from None


class Channel(_Hardened, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_Hardened, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel

"""Take a message off a Redis queue and record it as unacknowledged in one atomic step.

kombu's Redis transport pops a message with BRPOP, then records it in the ``unacked`` hash with a second command. The
visibility-timeout sweep restores messages from that hash. Between the two commands only the worker's memory holds the
message, so a worker SIGKILLed there, or a connection that fails there, loses the job. The soak lost 16 of 600 that way.

No Redis command both blocks on several lists and records what it pops, and a Lua script cannot block. So this channel
fetches the way Sidekiq's reliable fetch does:
- A script pops the first non-empty list in priority order and records the message in the same step.
- When every list is empty, or the script took the last message (it says how many are left), the channel waits a
  short interval (``idle_poll_interval``), then asks again. In a worker's event loop a repeating timer ends the wait;
  Redis's own blocking timeouts would not do, since they resolve only at the server's ``hz`` (every 100 ms by
  default). Without an event loop the wait is a blocking pop on a key nobody writes (and only an empty fetch leads to
  it).
- **Wake on arrival.** Publishers that use this transport (the producer, the gateway, the workers' own retries and
  re-renders) publish a wake-up on a Redis pub/sub channel in the same round trip as the message; an idle worker,
  subscribed to it, asks at once instead of at its next poll. Nothing is stored, and no server setting is needed.
  Publishers that do not (another language's client, Flower) are served at the next poll, as before.

A message is therefore always in exactly one place in Redis: its queue list, or the unacked hash. If its worker dies,
kombu's sweep restores it after the visibility timeout. Three details:
- **Claims.** The script also writes a claim (fetch id → message tag). If the connection fails before the reply
  arrives, the next channel of this process reads the claim after reconnecting. It puts the message back at the front
  of its queue at once, instead of after the visibility timeout.
- **No-ack consumers.** Celery's reply queues are consumed without acknowledgements and keep kombu's plain BRPOP.
  Recording their messages would make the sweep deliver them again.
- **Refused scripts.** A server that refuses the script (scripting disabled, a Redis-compatible server without Lua,
  an ACL without EVAL) gets BRPOP for a while, with a warning, rather than a worker that takes nothing. Any other
  error reply (out of memory, loading, a failover) only means "ask again". (Redis 7 runs it on a full
  ``noeviction`` server: moving a message frees about as much as it takes.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from queue import Empty
from time import monotonic, time
from typing import Any, ClassVar

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.client import PubSub
from redis.exceptions import ResponseError

from worker.broker.kombu_private import RedisChannel, RedisTransport
from worker.broker.redis import refuses_scripts

log = logging.getLogger(__name__)

#: KEYS: unacked hash, unacked index, claim to write, claim to clear, then the queue lists in serving order.
#: ARGV: now (seconds since the epoch, as kombu scores the index), claim lifetime (seconds).
#: Returns false when every list is empty, else the list, the message, whether it was recorded, and how many messages
#: the lists still hold (the earlier ones are empty): a channel that took the last one waits for a wake-up next, instead
#: of asking again at once only to hear that nothing is left.
#: The unacked record is kombu's own ``[payload, exchange, routing_key]``, built around the item's exact bytes. The
#: pop comes last: a Redis error stops a script without undoing what it already did, so a write that fails must leave
#: the message in its list, not popped and unrecorded.
FETCH_SCRIPT = """
redis.call('DEL', KEYS[4])
for i = 5, #KEYS do
  local item = redis.call('LINDEX', KEYS[i], -1)
  if item then
    local ok, message = pcall(cjson.decode, item)
    local properties = ok and type(message) == 'table' and message.properties
    local info = type(properties) == 'table' and properties.delivery_info
    local tag = type(properties) == 'table' and properties.delivery_tag
    local recorded = 0
    if type(info) == 'table' and type(tag) == 'string' then
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[1], tag,
                 '[' .. item .. ',' .. cjson.encode(info.exchange) .. ',' .. cjson.encode(info.routing_key) .. ']')
      redis.call('SET', KEYS[3], tag, 'EX', ARGV[2])
      recorded = 1
    end
    redis.call('RPOP', KEYS[i])
    local left = 0
    for j = i, #KEYS do
      left = left + redis.call('LLEN', KEYS[j])
    end
    return {KEYS[i], item, recorded, left}
  end
end
return false
"""

#: Pub/sub channel a publisher wakes idle workers on, per queue (a channel, not a key: nothing is stored).
WAKE_CHANNEL = "_f5batch.wake."
#: How long a worker whose wake-up subscription failed waits before it subscribes again (it polls meanwhile).
RESUBSCRIBE_S = 5.0


def wake_channel(prefix: str | None, queue: str) -> str:
    return f"{prefix or ''}{WAKE_CHANNEL}{queue}"


#: Blocked on while idle; nothing ever writes it.
IDLE_KEY = "_f5batch.idle"
#: How long kombu's BRPOP stands in after Redis refused the fetch script.
FALLBACK_SECONDS = 30.0


class UnreadClaims:
    """Claims of fetches whose reply never arrived. They are kept per process, not per channel: kombu replaces the
    channel when its connection fails, so the channel that sent the fetch is gone by the time Redis is back."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _claims: ClassVar[list[str]] = []

    @classmethod
    def add(cls, claim: str) -> None:
        with cls._lock:
            cls._claims.append(claim)

    @classmethod
    def take(cls) -> list[str]:
        with cls._lock:
            claims, cls._claims = cls._claims, []
        return claims


class FetchedQoS(kombu_redis.QoS):
    """kombu's QoS, except that a message the fetch script already recorded is not written to Redis again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorded: set[str] = set()

    def mark_recorded(self, delivery_tag: str) -> None:
        self._recorded.add(delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self._recorded:
            self._recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # the in-memory bookkeeping only
            return
        super().append(message, delivery_tag)


class TickingTransport(RedisTransport):
    """Mixin for kombu's Redis transports: wake the event loop every ``idle_poll_interval``, so that an idle channel
    asks again on time (kombu's hub polls for up to a second when no timer is due), and at once when a publisher
    says a message has arrived (see the module's docstring)."""

    ticks_idle_channels = False
    wakes = 0  # wake-ups seen: a fetch that comes back empty after one started fetches again at once
    _loop: Any  # the worker's event loop (kombu's Hub)
    _wake_sub: PubSub | None = None  # the wake-up subscription, while it works
    _wake_fd: int

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        options = self.client.transport_options or {}
        loop.call_repeatedly(float(options.get("idle_poll_interval", AtomicFetch.idle_poll_interval)),
                             self._end_idle_waits)
        self.ticks_idle_channels = True
        self._loop = loop
        self._wake_sub = None
        self._subscribe_wakes()

    def _end_idle_waits(self) -> None:
        """The loop's ``on_tick`` runs right after its timers, and starts the next fetch of every channel let go."""
        for channel in self._fetching():
            channel._idle = False

    def _fetching(self) -> list[AtomicFetch]:
        return [channel for channel in self.channels or [] if isinstance(channel, AtomicFetch)]

    def _subscribe_wakes(self) -> None:
        channel = next(iter(self._fetching()), None)
        if channel is None:
            self._loop.call_later(RESUBSCRIBE_S, self._subscribe_wakes)
            return
        try:
            pubsub = channel._create_client(asynchronous=False).pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(wake_channel(channel.global_keyprefix, "*"))
            pubsub.get_message(timeout=1.0)  # the subscription's confirmation: the socket is now live
            self._wake_fd = pubsub.connection._sock.fileno()
        except Exception as exc:
            log.warning("could not subscribe to wake-ups (%s); polling every %.0f ms meanwhile", exc,
                        1000 * float((self.client.transport_options or {}).get("idle_poll_interval", 0.05)))
            self._loop.call_later(RESUBSCRIBE_S, self._subscribe_wakes)
            return
        self._wake_sub = pubsub
        self._loop.add_reader(self._wake_fd, self._on_wake)

    def _on_wake(self, *_args: object) -> None:
        pubsub = self._wake_sub
        if pubsub is None:
            return
        try:
            while pubsub.get_message(timeout=0) is not None:
                pass
        except Exception as exc:  # the subscription's connection failed: poll, and subscribe again soon
            log.warning("wake-ups stopped (%s); polling until they are back", exc)
            self._loop.remove_reader(self._wake_fd)
            self._wake_sub = None
            with contextlib.suppress(Exception):
                pubsub.close()
            self._loop.call_later(RESUBSCRIBE_S, self._subscribe_wakes)
            return
        self.wakes += 1
        self._end_idle_waits()


class AtomicFetch(RedisChannel):
    """Mixin for kombu's Redis channels (plain and Sentinel); the QoS must be a ``FetchedQoS``."""

    from_transport_options = (*kombu_redis.Channel.from_transport_options, "idle_poll_interval")
    idle_poll_interval = 0.05

    _awaiting: str | None = None  # "fetch" or "idle" while one of ours is in flight; None for kombu's BRPOP
    _wakes_at_fetch = 0  # the transport's wake-ups when the fetch in flight was sent
    _claim: str | None = None  # the claim of the fetch in flight
    _claim_to_clear: str | None = None  # the last answered fetch's claim, deleted by the next fetch
    _idle = False
    _fallback_until = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._no_ack_queues: set[str] = set()
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def _fetches_atomically(self) -> bool:
        return (self.ack_emulation and monotonic() >= self._fallback_until
                and not self._no_ack_queues.intersection(self.active_queues))

    def _key(self, name: str) -> str:
        return f"{self.global_keyprefix or ''}{name}"

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, and a wake-up for the queue's idle workers in the same round trip."""
        batch = kwargs.get("_publish_batch")
        wake = wake_channel(self.global_keyprefix, queue)
        if batch is not None:
            super()._put(queue, message, **kwargs)
            batch.add("publish", wake, b"1")
            return
        if self._expires and queue in self._expires:
            super()._put(queue, message, **kwargs)
            with contextlib.suppress(Exception), self.conn_or_acquire() as client:  # lost: a poll's delay at most
                client.publish(wake, b"1")
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, dumps(message))
            pipe.publish(wake, b"1")
            pipe.execute()

    def _send(self, *command: Any) -> None:
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _brpop_start(self, timeout: int | None = None) -> None:
        if not self._fetches_atomically():
            self._awaiting = None
            return super()._brpop_start(timeout)
        self._return_unread_claims()
        if self._idle and getattr(self.connection, "ticks_idle_channels", False):
            return None  # the event loop's timer lets the channel go
        if self._idle:
            self._awaiting = "idle"
            return self._send("BLPOP", self._key(IDLE_KEY), f"{self.idle_poll_interval:.3f}")
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        claim = f"{self.unacked_key}.claim.{uuid.uuid4().hex}"
        keys = [self.unacked_key, self.unacked_index_key, claim, self._claim_to_clear or claim]
        keys += [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        self._awaiting, self._claim = "fetch", claim
        self._wakes_at_fetch = getattr(self.connection, "wakes", 0)
        # The claim must lapse before the sweep could restore (and another worker run) the message.
        claim_ttl = max(1, int(self.visibility_timeout) // 2)
        return self._send("EVAL", FETCH_SCRIPT, len(keys), *map(self._key, keys), repr(time()), claim_ttl)

    def _brpop_read(self, **options: Any) -> bool:
        awaiting, self._awaiting = self._awaiting, None
        if awaiting is None:
            return super()._brpop_read(**options)
        try:
            reply = self._read_reply(awaiting, **options)
            if awaiting == "idle" or not reply:
                # an empty fetch waits next (unless a wake-up came while it was out); a finished wait fetches next
                self._idle = awaiting == "fetch" and getattr(self.connection, "wakes", 0) == self._wakes_at_fetch
                raise Empty()
            self._claim_to_clear = self._claim
            dest, item, recorded, left = reply
            # The last message: the next fetch waits for a wake-up or the next poll. On a lone job's way, an empty
            # fetch's round trip would take this process's interpreter from the task thread that just started.
            self._idle = (not left and getattr(self.connection, "ticks_idle_channels", False)
                          and getattr(self.connection, "wakes", 0) == self._wakes_at_fetch)
            dest = bytes_to_str(dest)[len(self.global_keyprefix or ""):].rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            message = loads(bytes_to_str(item))
            if recorded:
                self.qos.mark_recorded(message["properties"]["delivery_tag"])
            self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _read_reply(self, awaiting: str, **options: Any) -> Any:
        try:
            return self.client.parse_response(self.client.connection, "EVAL", **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            if awaiting == "fetch" and self._claim is not None:
                UnreadClaims.add(self._claim)
            raise
        except ResponseError as exc:
            if awaiting != "fetch":
                raise
            if not refuses_scripts(exc):  # out of memory, loading, a failover: ask again, atomically, later
                log.warning("Redis could not run the fetch just now (%s); asking again", exc)
                raise Empty() from None
            self._fallback_until = monotonic() + FALLBACK_SECONDS
            log.warning("Redis refused the atomic fetch (%s); taking messages with kombu's BRPOP for %.0f s, where a "
                        "worker killed between pop and record loses its message", exc, FALLBACK_SECONDS)
            raise Empty() from None

    def _on_connection_disconnect(self, connection: Any) -> None:
        if self._in_poll is connection and self._awaiting == "fetch":
            if self._claim is not None:
                UnreadClaims.add(self._claim)
            self._awaiting = None
        super()._on_connection_disconnect(connection)

    def _return_unread_claims(self) -> None:
        """Put the messages of fetches whose reply was lost back at the front of their queues."""
        claims = UnreadClaims.take()
        if not claims:
            return
        try:
            with self.conn_or_acquire() as client:
                while claims:
                    tag = client.get(claims[0])
                    if tag:
                        self.qos.restore_by_tag(bytes_to_str(tag), client)
                        log.warning("message %s was handed out as the broker connection failed; it is back in its "
                                    "queue", bytes_to_str(tag))
                    client.delete(claims.pop(0))
        finally:
            for claim in claims:  # not done: a later channel tries again
                UnreadClaims.add(claim)

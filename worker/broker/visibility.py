"""Messages a live worker holds never time out: their visibility is renewed while it holds them.

kombu's Redis transport records each message it hands out in an index scored by the time of the hand-out; the sweep
gives back to the queue every message older than the visibility timeout, on the assumption that its worker died. A
synthesis worker holds many messages at once (twice a full pass per engine), and its scheduler serves them by priority:
a book's message can wait its turn, unacknowledged, past the timeout, although its worker is alive and will run it. The
sweep then hands it to a second worker, and the first one's acknowledgement removes the record both copies share.

So every worker renews, every ``F5_BROKER_RENEW_S`` (30 s, at most a quarter of the visibility timeout), the index score
of every message it still holds (the way SQS extends a message's visibility): ``ZADD XX``, so that a message
acknowledged in the meantime is never written back. A worker that dies stops renewing, and its messages come back
after the visibility timeout, as before. The time limits still bound how long a job may *run*; the visibility timeout
now bounds only how long a dead worker's messages wait. And a held message whose score is older than three renewals
belongs to a dead worker: ``resume`` sends its segment again instead of waiting for the sweep
(``worker.broker.inventory``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

STALE_RENEWALS = 3  # a held message not renewed for this many intervals belongs to a dead worker


def renewal_interval(transport_options: dict[str, Any]) -> float:
    """Often enough that two renewals can fail in a row before a held message would time out."""
    visibility = float(transport_options.get("visibility_timeout", 3600))
    return max(0.5, min(float(transport_options.get("held_renew_interval", 30.0)), visibility / 4))


def held_tags(channel: Any) -> list[str]:
    """The delivery tags of the messages this channel holds unacknowledged (kombu's QoS keeps them all, the ones
    waiting for an ETA included, less those acknowledged but not yet flushed from its books). Task threads
    acknowledge concurrently, so the copies are taken with a retry."""
    qos = getattr(channel, "qos", None)
    delivered = getattr(qos, "_delivered", None) or {}
    dirty = getattr(qos, "_dirty", None) or set()
    for _ in range(5):
        try:
            done = set(dirty)
            return [tag for tag in list(delivered) if tag not in done]
        except RuntimeError:  # changed size during iteration
            continue
    return []


def renew(channel: Any, now: float | None = None) -> int:
    """Move the index score of every held message to now; returns how many were renewed."""
    tags = held_tags(channel)
    if not tags or not getattr(channel, "ack_emulation", False):
        return 0
    stamp = time.time() if now is None else now
    renewed = 0
    # A pooled connection of its own: ``channel.client`` is the consumer's, whose fetch may be in flight, and a command
    # sent on it would read the fetch's reply (and the fetch this command's), which stops the worker.
    with channel.conn_or_acquire() as client:
        for start in range(0, len(tags), 500):
            chunk = tags[start : start + 500]
            renewed += int(client.zadd(channel.unacked_index_key, dict.fromkeys(chunk, stamp), xx=True, ch=True))
    return renewed


class RenewVisibility(bootsteps.StartStopStep):
    """A consumer step: a repeating timer in the worker's event loop that renews what it holds."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        interval = renewal_interval(c.app.conf.broker_transport_options or {})
        self._timer = c.timer.call_repeatedly(interval, self._renew, (c,), priority=10)
        log.info("renewing the visibility of the messages this worker holds every %.1f s", interval)

    def _renew(self, c: Any) -> None:
        consumer = getattr(c, "task_consumer", None)
        channel = getattr(consumer, "channel", None)
        if channel is None:
            return
        try:
            renewed = renew(channel)
        except Exception as exc:  # the broker is away: the next tick tries again, long before any timeout
            log.warning("could not renew the visibility of held messages: %s", exc)
            return
        if renewed:
            log.debug("renewed the visibility of %d held message(s)", renewed)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

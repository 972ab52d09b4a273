"""Publishing jobs with backpressure: never more than ``max_queued`` jobs waiting in the queue.

One connection and one producer are reused for every message. The queue length is read from the broker only as often
as needed: after a reading of ``n`` waiting jobs, ``max_queued - n`` more can be sent without looking again, which keeps
the bound exact without a round trip per message. Broker blips are retried by kombu's publish retry policy; a broker
that cannot be reached at all is a :class:`BrokerUnavailable` raised before anything is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypedDict

from celery import Celery
from kombu.exceptions import ChannelError, OperationalError

from worker.constants import ENQUEUED_AT_HEADER

log = logging.getLogger(__name__)

class RetryPolicy(TypedDict):
    max_retries: int
    interval_start: float  # seconds
    interval_step: float
    interval_max: float


RETRY_POLICY: RetryPolicy = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3.0}


class BrokerUnavailable(RuntimeError):
    pass


def _redacted(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def check_broker(app: Celery, timeout: float = 5.0) -> None:
    url = app.conf.broker_url
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5, timeout=timeout)  # type: ignore[arg-type]  # kombu-stubs say int; kombu takes seconds as float
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {_redacted(url)}: {exc}. Is Redis running, and is "
                                "BROKER_URL right?") from None


def queue_empty(app: Celery, queue: str) -> bool:
    """Nothing waits in the queue, at any priority."""
    with app.connection_for_read() as connection:
        try:
            channel = connection.default_channel
            return int(channel.queue_declare(queue=queue, passive=True).message_count) == 0  # type: ignore[attr-defined]  # kombu-stubs' StdChannel omits queue_declare
        except ChannelError:
            return True


class Publisher:
    def __init__(self, app: Celery, queue: str, max_queued: int, priority: int | None = None,
                 poll_s: float = 0.5, on_wait: Callable[[int], None] | None = None) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.app = app
        self.queue = queue
        self.max_queued = max_queued
        self.priority = priority
        self.poll_s = poll_s
        # called with the queue length each time it blocks on a full queue (to report progress, and why it waits)
        self.on_wait = on_wait
        self._room = 0
        self.published = 0
        self.waited_s = 0.0
        self._connection = app.connection_for_write()
        self._producer = app.amqp.Producer(self._connection, auto_declare=False)

    def close(self) -> None:
        self._connection.release()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def waiting(self) -> int:
        """Jobs waiting in the queue (not yet reserved by a worker), all priorities together."""
        errors = self._connection.recoverable_connection_errors + self._connection.recoverable_channel_errors
        pause = RETRY_POLICY["interval_start"]
        for _ in range(RETRY_POLICY["max_retries"]):
            try:
                declared = self._connection.default_channel.queue_declare(  # type: ignore[attr-defined]  # kombu-stubs' StdChannel omits queue_declare
                    queue=self.queue, passive=True)
                return int(declared.message_count)
            except ChannelError:  # not declared yet: nobody has published or consumed it, so nothing waits
                return 0
            except errors as exc:  # Redis restarting, or a Sentinel promoting a replica: give it time
                log.warning("broker blip while reading the queue length (%s); retrying in %.1f s", exc, pause)
                time.sleep(pause)
                pause = min(pause + RETRY_POLICY["interval_step"], RETRY_POLICY["interval_max"])
                self._connection.ensure_connection(**RETRY_POLICY)  # type: ignore[arg-type]  # kombu-stubs say int; kombu takes seconds as float
        raise BrokerUnavailable(f"cannot read the length of queue {self.queue!r}")

    def _wait_for_room(self) -> None:
        started = time.monotonic()
        while True:
            length = self.waiting()
            self._room = self.max_queued - length
            if self._room > 0:
                break
            if self.on_wait is not None:
                self.on_wait(length)
            time.sleep(self.poll_s)
        self.waited_s += time.monotonic() - started

    def publish(self, task: str, kwargs: dict[str, Any], task_id: str, summary: str = "") -> None:
        """Send one task. ``summary`` is what Flower shows as its arguments (Celery would repr the whole job)."""
        if self._room <= 0:
            self._wait_for_room()
        options: dict[str, Any] = {"queue": self.queue, "task_id": task_id, "producer": self._producer,
                                   "headers": {ENQUEUED_AT_HEADER: time.time()}, "retry": True,
                                   "retry_policy": RETRY_POLICY, "argsrepr": "()",
                                   "kwargsrepr": summary or f"{{{', '.join(kwargs)}: ...}}"}
        if self.priority is not None:
            options["priority"] = self.priority
        try:
            self.app.send_task(task, kwargs=kwargs, **options)
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailable(f"publishing to {_redacted(self.app.conf.broker_url)} failed after retries: "
                                    f"{exc}") from None
        self._room -= 1
        self.published += 1

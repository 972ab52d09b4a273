"""Pipelined publishing: a child process sends to the broker while this process reads and segments the corpus.

Publishing through Celery costs about a millisecond of CPU per message, as much as reading, segmenting and building
the job, so on a small machine the two stages run side by side in two processes. The child acknowledges each
message once the broker has taken it; only then does the parent write the segment's manifest line, so a crash at any
point leaves a manifest that lists exactly what was published.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer.interrupts import raise_if_requested
from producer.publish import BrokerUnavailable

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

_STOP = None
ACK_EVERY = 32


@dataclass(frozen=True)
class _Request:
    seq: int
    task: str
    kwargs: dict[str, Any]
    task_id: str
    summary: str


def _run_publisher(requests: Queue[_Request | None], acks: Queue[Any], queue: str, max_queued: int,
                   priority: int | None) -> None:
    import signal

    from producer.publish import Publisher
    from worker.celery_app import app, publish_through_the_hardened_transport, settings

    publish_through_the_hardened_transport(app, settings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops this process
    parent = os.getppid()
    done: list[int] = []

    def flush() -> None:
        if done:
            acks.put(list(done))
            done.clear()

    def blocked(length: int) -> None:
        if os.getppid() != parent:  # the producer was killed: nobody will read what this process would publish
            raise SystemExit("the producer that started this publisher is gone")
        flush()
        acks.put(("waiting", length))

    try:
        with Publisher(app, queue, max_queued, priority, on_wait=blocked) as publisher:
            while (request := requests.get()) is not _STOP:
                publisher.publish(request.task, request.kwargs, request.task_id, request.summary)
                done.append(request.seq)
                if len(done) >= ACK_EVERY or requests.empty():
                    flush()
            flush()
            acks.put(("stats", publisher.published, publisher.waited_s))
    except BaseException as exc:  # reported to the parent, which stops with a clear message
        flush()
        acks.put(("error", f"{type(exc).__name__}: {exc}"))


class PipelinedPublisher:
    """``on_confirmed`` receives, in order, the sequence numbers of messages the broker has taken, as soon as they
    are known (also while this process waits for room in a full pipeline); ``on_blocked`` receives the queue length
    each time publishing waits for room in a full queue (about twice a second while it lasts)."""

    def __init__(self, queue: str, max_queued: int, on_confirmed: Callable[[list[int]], None],
                 priority: int | None = None, depth: int = 512,
                 on_blocked: Callable[[int], None] | None = None) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no broker sockets shared by fork
        self._requests = context.Queue(maxsize=depth)
        self._acks = context.Queue()
        self._process = context.Process(target=_run_publisher, name="f5-batch-publisher", daemon=True,
                                        args=(self._requests, self._acks, queue, max_queued, priority))
        self._process.start()
        self._on_confirmed = on_confirmed
        self._on_blocked = on_blocked
        self.published = 0
        self.waited_s = 0.0
        self._finished = False

    def submit(self, seq: int, task: str, kwargs: dict[str, Any], task_id: str, summary: str) -> None:
        """Queue one message for the publisher process."""
        self._put(_Request(seq, task, kwargs, task_id, summary))
        self._collect(block=False)

    def _put(self, item: _Request | None) -> None:
        while True:
            raise_if_requested()
            try:
                self._requests.put(item, timeout=0.5)
                return
            except queue_module.Full:
                self._collect(block=False)  # report progress while the broker applies backpressure
                if not self._process.is_alive():
                    raise BrokerUnavailable("the publisher process stopped unexpectedly") from None

    def _collect(self, block: bool) -> None:
        while True:
            raise_if_requested()
            try:
                item = self._acks.get(block=block, timeout=5 if block else None)
            except queue_module.Empty:
                if block and not self._process.is_alive() and not self._finished:
                    raise BrokerUnavailable("the publisher process stopped unexpectedly") from None
                if block:
                    continue
                return
            if isinstance(item, tuple):
                if item[0] == "waiting":
                    if self._on_blocked is not None:
                        self._on_blocked(item[1])
                    continue
                if item[0] == "error":
                    self._finished = True
                    raise BrokerUnavailable(item[1])
                self._finished = True
                self.published, self.waited_s = item[1], item[2]
                return
            if item:
                self._on_confirmed(item)

    def finish(self) -> None:
        """Wait until every queued message is published and confirmed."""
        self._put(_STOP)
        self._collect(block=True)
        self._process.join(timeout=30)

    def abort(self) -> None:
        """Stop publishing now. Requests not yet sent are dropped: they are not in the manifest, so a re-run sends
        them."""
        self._requests.cancel_join_thread()  # or exit would wait to flush them into a pipe nobody reads
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)

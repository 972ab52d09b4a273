"""Dynamic batching: single jobs from many concurrent tasks share sampling passes.

Other backends send ``f5tts.synthesize`` jobs one at a time. Run the worker with the thread pool (``-P threads -c N``)
and up to N jobs are in flight in one process; each task hands its requests to this batcher and waits. A preparation
thread does the CPU-side work (reference audio, chunking, tokens) while the execution thread runs the current passes;
the execution thread collects prepared requests until they fill a pass's frame budget or the oldest has waited
``max_wait_s``, then runs them together. Every task still gets its own outputs back, and Celery still acknowledges
each message only after that task has stored its audio, so delivery guarantees are unchanged.

Celery-free and torch-free: the engine is passed in.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.engine.types import SynthesisOutput, SynthesisRequest

log = logging.getLogger(__name__)


class PreparingEngine(Protocol):
    model_name: str
    precision: str

    def prepare(self, request: SynthesisRequest) -> Any: ...

    def execute(self, prepared: Sequence[Any]) -> list[SynthesisOutput]: ...


@dataclass
class _Ticket:
    """One caller's requests, and the event it waits on."""

    requests: list[SynthesisRequest]
    submitted: float = field(default_factory=time.monotonic)
    prepared: list[Any] = field(default_factory=list)
    outputs: list[SynthesisOutput] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def frames(self) -> int:
        return sum(getattr(p, "frames", 0) for p in self.prepared)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


_STOP = object()


class DynamicBatcher:
    """Thread-safe front of one engine. ``synthesize`` has the engine's signature, so the job runner uses either."""

    def __init__(self, engine: PreparingEngine, max_wait_s: float, frame_budget: int, max_requests: int) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.precision = engine.precision
        self.max_wait_s = max_wait_s
        self.frame_budget = frame_budget
        self.max_requests = max_requests
        self.executions = 0
        self._incoming: queue.Queue = queue.Queue()
        self._prepared: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._prepare_loop, name="f5-prepare", daemon=True),
                         threading.Thread(target=self._execute_loop, name="f5-execute", daemon=True)]
        for thread in self._threads:
            thread.start()

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutput]:
        ticket = _Ticket(list(requests))
        self._incoming.put(ticket)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.outputs

    def close(self) -> None:
        self._incoming.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)

    def _prepare_loop(self) -> None:
        while (ticket := self._incoming.get()) is not _STOP:
            try:
                ticket.prepared = [self.engine.prepare(request) for request in ticket.requests]
            except BaseException as exc:  # delivered to the waiting task, which fails or retries
                ticket.fail(exc)
                continue
            self._prepared.put(ticket)
        self._prepared.put(_STOP)

    def _collect(self, first: _Ticket) -> tuple[list[_Ticket], bool]:
        batch, frames, count = [first], first.frames, len(first.requests)
        deadline = first.submitted + self.max_wait_s
        while frames < self.frame_budget and count < self.max_requests:
            try:
                ticket = self._prepared.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if ticket is _STOP:
                return batch, True
            batch.append(ticket)
            frames, count = frames + ticket.frames, count + len(ticket.requests)
        return batch, False

    def _execute_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._prepared.get()
            if first is _STOP:
                return
            batch, stopping = self._collect(first)
            self._run(batch)

    def _run(self, batch: list[_Ticket]) -> None:
        started = time.monotonic()
        try:
            outputs = self.engine.execute([p for ticket in batch for p in ticket.prepared])
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].fail(exc)
                return
            log.warning("a pass of %d jobs failed (%s); running them one by one", len(batch), exc)
            for ticket in batch:
                self._run([ticket])
            return
        self.executions += 1
        log.debug("batched %d tasks, %d requests", len(batch), len(outputs))
        position = 0
        for ticket in batch:
            ticket.outputs = outputs[position : position + len(ticket.requests)]
            for output in ticket.outputs:
                output.wait_s = started - ticket.submitted
            position += len(ticket.requests)
            ticket.done.set()

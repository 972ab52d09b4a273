"""The pass scheduler: which chunks of which jobs run together in the engine's next pass.

Pure Python (no torch, no model), so its policy is tested on its own. Every chunk of every prepared job waits in one
pool; each time the engine is free, the planner packs the pool into candidate passes (one length bucket and one
sampling group each, within the frame budget) and the scheduler picks one:

- a pass is *ready* when it is full (no chunk of its bucket could join), when its oldest chunk has waited
  ``max_wait_s``, or when it holds a job that must run alone;
- among ready passes, the most urgent wins (the lowest priority number, as Redis orders them), then the oldest;
- when none is ready, the engine waits until the first one will be, or until new work arrives.

With a deep queue the pool always holds more than a pass, so passes leave full, whatever the jobs' lengths or how they
arrived. A job that takes part in a pass that fails is retried once alone, so one bad job cannot fail its companions;
a cancelled job's chunks leave the pool, and a running pass whose jobs are all cancelled is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.planner import BatchPlan, PlanItem, PlannerConfig, plan_batches

DEFAULT_PRIORITY = 0  # a message without one: kombu's Redis transport files it with priority 0


@dataclass
class Ticket:
    """One caller's requests, as the engine process tracks them."""

    id: int
    requests: list[Any]
    priority: int = DEFAULT_PRIORITY
    alone: bool = False  # run in passes of its own (a job whose earlier run was lost with its process)
    submitted: float = field(default_factory=time.monotonic)
    prepared: list[Any] = field(default_factory=list)  # one PreparedRequest per request
    waves: dict[tuple[int, int], Any] = field(default_factory=dict)  # (request, chunk) -> waveform
    seconds: list[float] = field(default_factory=list)  # pass time attributed to each request
    cancelled: bool = False
    error: BaseException | None = None
    retried_alone: bool = False

    @property
    def remaining(self) -> int:
        return sum(len(p.chunks) for p in self.prepared) - len(self.waves)

    @property
    def done(self) -> bool:
        return self.error is not None or self.remaining == 0


@dataclass(frozen=True)
class Pass:
    """A pass chosen to run: its chunks, and which ticket each belongs to."""

    plan: BatchPlan
    entries: tuple[tuple[Ticket, int, int], ...]  # (ticket, request index, chunk index), in plan order

    @property
    def chunks(self) -> list[Any]:
        return [ticket.prepared[r].chunks[k] for ticket, r, k in self.entries]

    @property
    def tickets(self) -> list[Ticket]:
        return list({id(t): t for t, _, _ in self.entries}.values())


class PassScheduler:
    """Not thread-safe: the engine process calls it under one lock."""

    def __init__(self, planner: PlannerConfig, max_wait_s: float, clock: Callable[[], float] = time.monotonic):
        self.planner = planner
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._pool: dict[Hashable, tuple[Ticket, int, int, Any]] = {}
        self.tickets: dict[int, Ticket] = {}

    def __len__(self) -> int:
        return len(self._pool)

    def add(self, ticket: Ticket) -> None:
        """A prepared ticket: its chunks join the pool (requests that failed preparation have none)."""
        ticket.seconds = [0.0] * len(ticket.prepared)
        self.tickets[ticket.id] = ticket
        for r, prepared in enumerate(ticket.prepared):
            for k, chunk in enumerate(prepared.chunks):
                self._pool[(ticket.id, r, k)] = (ticket, r, k, chunk)

    def cancel(self, ticket_id: int) -> Ticket | None:
        ticket = self.tickets.get(ticket_id)
        if ticket is not None:
            ticket.cancelled = True
            self._drop(ticket)
        return ticket

    def finished(self) -> list[Ticket]:
        """Tickets with nothing left to run (done, failed or cancelled), removed from the scheduler."""
        out = [t for t in self.tickets.values() if t.done or t.cancelled]
        for ticket in out:
            del self.tickets[ticket.id]
        return out

    def _group(self, ticket: Ticket, chunk: Any) -> Hashable:
        return (chunk.group, "alone", ticket.id) if ticket.alone else chunk.group

    def next_pass(self) -> Pass | float | None:
        """The pass to run now; else the seconds until one will be ready; None when the pool is empty."""
        if not self._pool:
            return None
        items = [PlanItem(key, chunk.frames, self._group(ticket, chunk))
                 for key, (ticket, _, _, chunk) in self._pool.items()]
        now = self.clock()
        best, best_key, wait = None, None, None
        for plan in plan_batches(items, self.planner):
            owners = [self._pool[item.id][0] for item in plan.items]
            oldest = min(t.submitted for t in owners)
            ready = self.planner.full(plan) or any(t.alone for t in owners) or now - oldest >= self.max_wait_s - 1e-6
            if not ready:
                until = oldest + self.max_wait_s - now
                wait = until if wait is None else min(wait, until)
                continue
            key = (min(t.priority for t in owners), oldest)
            if best_key is None or key < best_key:
                best, best_key = plan, key
        if best is None:
            return max(wait or 0.0, 0.0)
        entries = []
        for item in best.items:
            ticket, r, k, _ = self._pool.pop(item.id)
            entries.append((ticket, r, k))
        return Pass(best, tuple(entries))

    def complete(self, chosen: Pass, waves: Sequence[Any], seconds: float) -> None:
        """The pass ran: each chunk's waveform goes to its ticket, with its share of the pass's time."""
        total = sum(item.frames for item in chosen.plan.items) or 1
        for item, (ticket, r, k), wave in zip(chosen.plan.items, chosen.entries, waves, strict=True):
            ticket.waves[(r, k)] = wave
            ticket.seconds[r] += seconds * item.frames / total

    def fail(self, chosen: Pass, error: BaseException) -> None:
        """The pass failed. A ticket that had companions is retried alone; a ticket already alone fails."""
        for ticket in chosen.tickets:
            if ticket.alone or ticket.retried_alone or len(chosen.tickets) == 1:
                ticket.error = error
                self._drop(ticket)
            else:
                ticket.alone = ticket.retried_alone = True
        for ticket, r, k in chosen.entries:
            if ticket.error is None and not ticket.cancelled:
                self._pool[(ticket.id, r, k)] = (ticket, r, k, ticket.prepared[r].chunks[k])

    def _drop(self, ticket: Ticket) -> None:
        for key in [key for key, value in self._pool.items() if value[0] is ticket]:
            del self._pool[key]


def all_cancelled(chosen: Pass) -> Callable[[], bool]:
    """For the sampler: stop the running pass once every job in it has been abandoned."""
    tickets = chosen.tickets
    return lambda: all(ticket.cancelled for ticket in tickets)

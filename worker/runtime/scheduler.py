"""The pass scheduler: which chunks of which jobs run together in the engine's next pass.

Pure Python (no torch, no model), so its policy is tested on its own. Every chunk of every prepared job waits in one
pool; each time the engine is free, the planner packs the pool into candidate passes (one length bucket and one
sampling group each, within the frame budget) and the scheduler picks one:

- a pass is *ready* when it is full (no chunk of its bucket could join), when nothing more is being prepared (the
  engine never idles waiting for work that has not arrived: a lone job starts at once, and what arrives meanwhile
  gathers for the next pass), when its oldest chunk has waited ``max_wait_s`` (the bound while more is on its way), or
  when it holds a job that must run alone;
- among ready passes, the most urgent wins: the lowest priority number (as Redis orders them), raised by one step for
  every ``age_step_s`` a chunk has waited, so that a book is never starved by a stream of gateway jobs; then the
  oldest. Ageing stops short of interactive work (priority 0): a worker holds a whole book's backlog at once, and
  once all of it had aged past a new ``/tts`` request, that request waited for the entire backlog (196 s in
  bench/bench_interactive.py). Books still move while interactive work flows: an interactive pass takes along the
  book's chunks of its length bucket that fit in the target below;
- while interactive work (priority 0) has been seen in the last ``interactive_window_s``, passes are cut to what the
  measured pass cost says fits in ``interactive_target_s``: a request that arrives then waits at most about that long
  for the pass in flight, and its own pass is its rows plus what of the book fits beside them;
- a pass cannot be cut below one row, and one row of a book can take longer than the target (about a second on a
  CPU): so between every two sampling steps of a pass that may outlast the target (``may_interrupt``), the engine asks
  for an ``urgent_pass`` of the waiting interactive chunks alone, runs it there and then, and goes on with the book's
  pass where it was (no work lost). Jobs that must run alone take part in neither;
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
INTERACTIVE_PRIORITY = 0  # the gateway's /tts (worker.constants.PRIORITY_INTERACTIVE)


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
    prepared_at: float | None = None  # when its preparation ended (it joined the pool)
    first_pass_at: float | None = None  # when the first pass holding it started
    done_at: float | None = None  # when its last chunk's pass ended

    @property
    def remaining(self) -> int:
        return sum(len(p.chunks) for p in self.prepared) - len(self.waves)

    @property
    def done(self) -> bool:
        return self.error is not None or self.remaining == 0


@dataclass(frozen=True)
class Pass:
    """A pass chosen to run: its chunks, and which ticket each belongs to."""

    plan: BatchPlan[Hashable]
    entries: tuple[tuple[Ticket, int, int], ...]  # (ticket, request index, chunk index), in plan order

    @property
    def chunks(self) -> list[Any]:
        return [ticket.prepared[r].chunks[k] for ticket, r, k in self.entries]

    @property
    def tickets(self) -> list[Ticket]:
        return list({id(t): t for t, _, _ in self.entries}.values())


class PassCost:
    """Seconds per unit of work (rows × padded frames × steps × 2 with CFG), per precision, from the passes run:
    what the interactive bound sizes passes with. An exponential average follows a warming or loaded device."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self.smoothing = smoothing
        self._rate: dict[Hashable, float] = {}

    @staticmethod
    def _sampling(plan: BatchPlan[Hashable]) -> tuple[Hashable, int, float | None, bool]:
        """(precision, steps, sway, CFG) of a plan's rows, through the wrapping of jobs that run alone."""
        group = plan.group
        if isinstance(group, tuple) and len(group) == 3 and group[1] == "alone":
            group = group[0]
        return group if isinstance(group, tuple) and len(group) == 4 else (group, 1, None, False)

    @classmethod
    def work(cls, plan: BatchPlan[Hashable], rows: int | None = None) -> float:
        _, steps, _, cfg = cls._sampling(plan)
        return (plan.size if rows is None else rows) * plan.frames * max(1, int(steps)) * (2 if cfg else 1)

    @classmethod
    def _key(cls, plan: BatchPlan[Hashable]) -> Hashable:
        return cls._sampling(plan)[0]

    def observe(self, plan: BatchPlan[Hashable], seconds: float) -> None:
        work = self.work(plan)
        if work <= 0 or seconds <= 0:
            return
        rate, key = seconds / work, self._key(plan)
        old = self._rate.get(key)
        self._rate[key] = rate if old is None else old + self.smoothing * (rate - old)

    def seconds(self, plan: BatchPlan[Hashable]) -> float | None:
        """What the plan is expected to take; None while no pass of its kind has been measured."""
        rate = self._rate.get(self._key(plan))
        return None if rate is None else rate * self.work(plan)

    def rows_within(self, plan: BatchPlan[Hashable], seconds: float) -> int | None:
        """How many of the plan's rows fit in ``seconds``; None while no pass of its kind has been measured."""
        rate = self._rate.get(self._key(plan))
        if rate is None:
            return None
        return max(1, int(seconds / (rate * self.work(plan, rows=1))))


class PassScheduler:
    """Not thread-safe: the engine process calls it under one lock (``has_urgent`` alone is read without it)."""

    def __init__(self, planner: PlannerConfig, max_wait_s: float, clock: Callable[[], float] = time.monotonic,
                 interactive_target_s: float | None = None, interactive_window_s: float = 30.0,
                 age_step_s: float = 10.0):
        self.planner = planner
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.interactive_target_s = interactive_target_s
        self.interactive_window_s = interactive_window_s
        self.age_step_s = age_step_s
        self.cost = PassCost()
        self._last_interactive: float | None = None
        self._urgent: set[int] = set()  # interactive tickets that may have chunks in the pool
        self._pool: dict[Hashable, tuple[Ticket, int, int, Any]] = {}
        self.tickets: dict[int, Ticket] = {}

    def __len__(self) -> int:
        return len(self._pool)

    def add(self, ticket: Ticket) -> None:
        """A prepared ticket: its chunks join the pool (requests that failed preparation have none)."""
        ticket.seconds = [0.0] * len(ticket.prepared)
        ticket.prepared_at = self.clock()
        self.tickets[ticket.id] = ticket
        if ticket.priority <= INTERACTIVE_PRIORITY:
            self._last_interactive = self.clock()
            if self.interactive_target_s is not None and not ticket.alone:
                self._urgent.add(ticket.id)
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
            self._urgent.discard(ticket.id)
        return out

    def _group(self, ticket: Ticket, chunk: Any) -> Hashable:
        return (chunk.group, "alone", ticket.id) if ticket.alone else chunk.group

    def next_pass(self, preparing: int = 0) -> Pass | float | None:
        """The pass to run now; else the seconds until one will be ready; None when the pool is empty.
        ``preparing``: tickets handed over but not yet in the pool (work that is about to arrive)."""
        if not self._pool:
            return None
        items = [PlanItem(key, chunk.frames, self._group(ticket, chunk))
                 for key, (ticket, _, _, chunk) in self._pool.items()]
        now = self.clock()
        best, best_key, wait = None, None, None
        for plan in plan_batches(items, self.planner):
            owners = [self._pool[item.id][0] for item in plan.items]
            oldest = min(t.submitted for t in owners)
            ready = (self.planner.full(plan) or preparing == 0 or any(t.alone for t in owners)
                     or now - oldest >= self.max_wait_s - 1e-6)
            if not ready:
                until = oldest + self.max_wait_s - now
                wait = until if wait is None else min(wait, until)
                continue
            key = (min(self._urgency(t, now) for t in owners), oldest)
            if best_key is None or key < best_key:
                best, best_key = plan, key
        if best is None:
            return max(wait or 0.0, 0.0)
        return self._take(self._bounded(best, now), now)

    def _take(self, plan: BatchPlan[Hashable], now: float) -> Pass:
        """The plan's chunks leave the pool as a pass that starts now."""
        entries = []
        for item in plan.items:
            ticket, r, k, _ = self._pool.pop(item.id)
            entries.append((ticket, r, k))
            if ticket.first_pass_at is None:
                ticket.first_pass_at = now
        return Pass(plan, tuple(entries))

    def may_interrupt(self, chosen: Pass) -> bool:
        """Whether interactive work may run between the steps of this pass: the interactive target is on, the pass
        holds no interactive work, and it may outlast the target (a pass cut to the target is simply waited for; on
        a GPU, where the running pass fills its memory, that keeps nested passes to the cases that need them)."""
        if self.interactive_target_s is None:
            return False
        if any(ticket.priority <= INTERACTIVE_PRIORITY or ticket.alone for ticket in chosen.tickets):
            return False  # interactive work already, or a job that must run alone (nothing may share its process time)
        expected = self.cost.seconds(chosen.plan)
        return expected is None or expected > self.interactive_target_s

    def has_urgent(self) -> bool:
        """Whether interactive chunks may be waiting (cheap: asked between every two steps of a running pass)."""
        return bool(self._urgent)

    def urgent_pass(self) -> Pass | None:
        """The waiting interactive chunks (of one length bucket and sampling group, oldest first) as a pass of their
        own, to run between two steps of a running book pass: a request then waits one sampling step, not the rest of
        a pass that may hold a row longer than the interactive target (one row of a book takes about a second on a
        CPU). None when no interactive chunk waits."""
        if not self._urgent:
            return None
        items = [PlanItem(key, chunk.frames, self._group(ticket, chunk))
                 for key, (ticket, _, _, chunk) in self._pool.items() if ticket.id in self._urgent and not ticket.alone]
        if not items:
            self._urgent.clear()
            return None
        plan = min(plan_batches(items, self.planner),
                   key=lambda p: min(self._pool[item.id][0].submitted for item in p.items))
        chosen = self._take(plan, self.clock())
        self._urgent = {self._pool[item.id][0].id for item in items if item.id in self._pool}
        return chosen

    def _urgency(self, ticket: Ticket, now: float) -> float:
        """Priority, better by one step for every ``age_step_s`` waited (ageing: nothing waits forever), but never as
        urgent as interactive work unless it is interactive."""
        aged = ticket.priority - (now - ticket.submitted) / self.age_step_s
        if ticket.priority <= INTERACTIVE_PRIORITY:
            return aged
        return max(aged, INTERACTIVE_PRIORITY + 0.5)

    def _bounded(self, plan: BatchPlan[Hashable], now: float) -> BatchPlan[Hashable]:
        """A pass cut to fit the interactive target while interactive work is about. A book's pass is cut to what
        fits; an interactive pass keeps all its interactive rows and takes along only the book rows that still fit,
        so that the request it serves waits for its own rows, not for a full pass of the book's (it did:
        bench/bench_interactive.py measured a p95 of 2.5x idle while book rows rode along unbounded)."""
        if (self.interactive_target_s is None or self._last_interactive is None
                or now - self._last_interactive > self.interactive_window_s):
            return plan
        rows = self.cost.rows_within(plan, self.interactive_target_s)
        if rows is None or rows >= plan.size:
            return plan
        urgent = [item for item in plan.items if self._pool[item.id][0].priority <= INTERACTIVE_PRIORITY]
        others = [item for item in plan.items if self._pool[item.id][0].priority > INTERACTIVE_PRIORITY]
        return BatchPlan((*urgent, *others[: max(0, rows - len(urgent))]), plan.frames, plan.group)

    def observe(self, chosen: Pass, seconds: float) -> None:
        """A pass ran in ``seconds``: the cost model learns from it."""
        self.cost.observe(chosen.plan, seconds)

    def abandon(self, chosen: Pass, error: BaseException) -> None:
        """Something failed around the pass (not in it): its tickets fail, and their other chunks leave the pool."""
        for ticket in chosen.tickets:
            if ticket.error is None:
                ticket.error = error
            self._drop(ticket)

    def complete(self, chosen: Pass, waves: Sequence[Any], seconds: float) -> None:
        """The pass ran: each chunk's waveform goes to its ticket, with its share of the pass's time."""
        total = sum(item.frames for item in chosen.plan.items) or 1
        now = self.clock()
        for item, (ticket, r, k), wave in zip(chosen.plan.items, chosen.entries, waves, strict=True):
            ticket.waves[(r, k)] = wave
            ticket.seconds[r] += seconds * item.frames / total
            if ticket.remaining == 0:
                ticket.done_at = now

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

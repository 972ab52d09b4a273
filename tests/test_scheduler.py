"""The pass scheduler's policy, pure Python: stand-in chunks (only lengths and groups matter to it), a fake clock.
What the engine computes is tested elsewhere with the real model."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from worker.planner import PlannerConfig
from worker.runtime.scheduler import Pass, PassScheduler, Ticket, all_cancelled

GROUP = ("fp32", 16, -1.0, True)


@dataclass
class Chunk:
    frames: int
    group: tuple = GROUP


@dataclass
class Prepared:
    chunks: list = field(default_factory=list)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ticket(ticket_id: int, *frames: int, clock: Clock, priority: int = 0, alone: bool = False,
            group: tuple = GROUP) -> Ticket:
    ticket = Ticket(ticket_id, [None], priority=priority, alone=alone, submitted=clock())
    ticket.prepared = [Prepared([Chunk(n, group) for n in frames])]
    return ticket


@pytest.fixture
def clock():
    return Clock()


def _scheduler(clock, budget=8 * 1024, max_batch=8, wait=0.05):
    return PassScheduler(PlannerConfig(frame_budget=budget, max_batch=max_batch, frame_buckets=(512, 1024)), wait,
                         clock)


def test_jobs_handed_over_together_share_a_full_pass(clock):
    scheduler = _scheduler(clock)
    for i in range(8):
        scheduler.add(_ticket(i, 900, clock=clock))
        if i < 7:  # the rest of the batch is still being prepared
            assert isinstance(scheduler.next_pass(preparing=7 - i), float), "a part-full pass waits for companions"
    chosen = scheduler.next_pass()
    assert isinstance(chosen, Pass) and chosen.plan.size == 8 and len(chosen.tickets) == 8


def test_a_lone_job_starts_at_once_when_nothing_else_is_on_its_way(clock):
    scheduler = _scheduler(clock)
    scheduler.add(_ticket(1, 900, clock=clock))
    chosen = scheduler.next_pass(preparing=0)
    assert isinstance(chosen, Pass) and chosen.plan.size == 1


def test_a_part_full_pass_leaves_when_its_oldest_job_has_waited_enough(clock):
    scheduler = _scheduler(clock)
    scheduler.add(_ticket(1, 900, clock=clock))
    wait = scheduler.next_pass(preparing=3)
    assert wait == pytest.approx(0.05)
    clock.now += 0.05
    chosen = scheduler.next_pass(preparing=3)
    assert isinstance(chosen, Pass) and chosen.plan.size == 1


def test_the_most_urgent_ready_pass_goes_first(clock):
    scheduler = _scheduler(clock, wait=0.0)
    scheduler.add(_ticket(1, 400, 400, clock=clock, priority=6))  # a book, first in line
    clock.now += 1
    scheduler.add(_ticket(2, 900, clock=clock, priority=0))  # an interactive request, later
    first = scheduler.next_pass()
    assert [t.id for t in first.tickets] == [2]


def test_a_job_that_must_run_alone_never_shares_its_pass(clock):
    scheduler = _scheduler(clock)
    scheduler.add(_ticket(1, 900, clock=clock))
    scheduler.add(_ticket(2, 900, clock=clock, alone=True))
    scheduler.add(_ticket(3, 900, clock=clock))
    chosen = scheduler.next_pass(preparing=2)
    assert [t.id for t in chosen.tickets] == [2]  # ready at once: a suspect does not wait for anyone


def test_groups_and_buckets_never_mix(clock):
    scheduler = _scheduler(clock, wait=0.0)
    scheduler.add(_ticket(1, 300, clock=clock))
    scheduler.add(_ticket(2, 900, clock=clock))
    scheduler.add(_ticket(3, 300, clock=clock, group=("fp32", 8, -1.0, True)))
    seen = []
    while isinstance(chosen := scheduler.next_pass(), Pass):
        seen.append(sorted(t.id for t in chosen.tickets))
        scheduler.complete(chosen, [object()] * chosen.plan.size, 0.1)
    assert sorted(seen) == [[1], [2], [3]]


def test_a_ticket_finishes_when_its_last_chunk_has_run(clock):
    scheduler = _scheduler(clock, max_batch=2, wait=0.0)
    ticket = _ticket(1, 900, 900, 900, clock=clock)
    scheduler.add(ticket)
    first = scheduler.next_pass()
    scheduler.complete(first, ["a", "b"], 1.0)
    assert not ticket.done and scheduler.finished() == []
    second = scheduler.next_pass()
    scheduler.complete(second, ["c"], 0.5)
    assert ticket.done and scheduler.finished() == [ticket]
    assert sorted(ticket.waves) == [(0, 0), (0, 1), (0, 2)] and ticket.seconds == [pytest.approx(1.5)]


def test_a_failed_pass_retries_its_jobs_alone_then_fails_the_culprit(clock):
    scheduler = _scheduler(clock, wait=0.0)
    good, bad = _ticket(1, 900, clock=clock), _ticket(2, 900, clock=clock)
    scheduler.add(good)
    scheduler.add(bad)
    shared = scheduler.next_pass()
    scheduler.fail(shared, RuntimeError("boom"))
    assert good.alone and bad.alone and good.error is None and bad.error is None
    for _ in range(2):
        chosen = scheduler.next_pass()
        if chosen.tickets == [bad]:
            scheduler.fail(chosen, RuntimeError("boom again"))
        else:
            scheduler.complete(chosen, ["wave"], 0.1)
    assert good.done and good.error is None
    assert isinstance(bad.error, RuntimeError) and str(bad.error) == "boom again"
    assert scheduler.next_pass() is None


def test_cancelled_jobs_leave_the_pool_and_stop_their_pass(clock):
    scheduler = _scheduler(clock, wait=0.0)
    first, second = _ticket(1, 900, clock=clock), _ticket(2, 900, 900, clock=clock)
    scheduler.add(first)
    scheduler.add(second)
    running = scheduler.next_pass()
    stop = all_cancelled(running)
    scheduler.cancel(1)
    assert not stop()
    scheduler.cancel(2)
    assert stop()
    assert scheduler.next_pass() is None and {t.id for t in scheduler.finished()} == {1, 2}


def test_waiting_books_age_before_newer_jobs_but_never_before_interactive_work(clock):
    scheduler = _scheduler(clock, wait=0.0)
    scheduler.add(_ticket(1, 400, clock=clock, priority=6))  # a book chunk
    clock.now += 70  # it has waited seven age steps: more urgent than a new gateway job
    scheduler.add(_ticket(2, 900, clock=clock, priority=3))
    assert [t.id for t in scheduler.next_pass().tickets] == [1]
    for i in range(10, 20):  # a whole backlog of book chunks, waiting for ever
        scheduler.add(_ticket(i, 400, clock=clock, priority=6))
    clock.now += 1000
    scheduler.add(_ticket(3, 400, clock=clock, priority=0))  # a /tts request: it goes first all the same
    assert 3 in {t.id for t in scheduler.next_pass().tickets}


def _interactive_scheduler(clock) -> PassScheduler:
    """A 250 ms interactive target, and one full book pass run, which measured 0.1 s per row of 900 frames."""
    scheduler = PassScheduler(PlannerConfig(frame_budget=64 * 1024, max_batch=64, frame_buckets=(512, 1024)), 0.0,
                              clock, interactive_target_s=0.25)
    for i in range(16):
        scheduler.add(_ticket(i, 900, clock=clock, priority=6))
    first = scheduler.next_pass()
    assert first.plan.size == 16, "no interactive work seen yet: a full pass"
    scheduler.observe(first, 1.6)
    scheduler.complete(first, ["w"] * 16, 1.6)
    return scheduler


def test_book_passes_shrink_to_the_interactive_target_while_interactive_work_is_about(clock):
    scheduler = _interactive_scheduler(clock)
    scheduler.add(_ticket(99, 900, clock=clock, priority=0))
    interactive = scheduler.next_pass()
    assert [t.id for t in interactive.tickets] == [99]
    for i in range(100, 116):
        scheduler.add(_ticket(i, 900, clock=clock, priority=6))
    bounded = scheduler.next_pass()
    assert bounded.plan.size == 2, "0.25 s at 0.1 s a row"
    clock.now += 31  # the interactive window has passed: full passes again
    assert scheduler.next_pass().plan.size == 14


def test_an_interactive_pass_takes_along_only_the_book_rows_that_fit_the_target(clock):
    scheduler = _interactive_scheduler(clock)
    for i in range(100, 140):  # the book's backlog, in the same length bucket as the request
        scheduler.add(_ticket(i, 900, clock=clock, priority=6))
    clock.now += 1
    scheduler.add(_ticket(99, 900, clock=clock, priority=0))
    interactive = scheduler.next_pass()
    ids = [t.id for t in interactive.tickets]
    assert 99 in ids and len(ids) == 2, f"the request and one book row (0.25 s at 0.1 s a row), not {len(ids)} rows"
    assert scheduler.next_pass().plan.size == 2, "the book goes on in passes that fit the target"


def test_the_urgent_pass_holds_the_waiting_interactive_chunks_alone(clock):
    scheduler = PassScheduler(PlannerConfig(frame_budget=8 * 1024, max_batch=8, frame_buckets=(512, 1024)), 0.05,
                              clock, interactive_target_s=0.25)
    assert not scheduler.has_urgent() and scheduler.urgent_pass() is None
    for i in range(6):
        scheduler.add(_ticket(i, 900, clock=clock, priority=6))
    scheduler.add(_ticket(50, 400, 400, clock=clock, priority=0))  # a request of two chunks
    scheduler.add(_ticket(51, 300, clock=clock, priority=0))
    assert scheduler.has_urgent()
    urgent = scheduler.urgent_pass()
    assert {t.id for t in urgent.tickets} == {50, 51} and urgent.plan.size == 3, "every interactive chunk, no book"
    assert scheduler.urgent_pass() is None and not scheduler.has_urgent()
    assert len(scheduler) == 6, "the book's chunks stay in the pool"
    scheduler.add(_ticket(52, 300, clock=clock, priority=0, alone=True))  # its last run died with its process
    assert scheduler.urgent_pass() is None, "a job that must run alone never runs inside another pass"


def test_only_a_pass_that_may_outlast_the_target_is_interrupted(clock):
    scheduler = PassScheduler(PlannerConfig(frame_budget=64 * 1024, max_batch=64, frame_buckets=(512, 1024)), 0.0,
                              clock, interactive_target_s=0.25)  # nothing measured yet
    for i in range(4):
        scheduler.add(_ticket(i, 900, clock=clock, priority=6))
    unmeasured = scheduler.next_pass()
    assert scheduler.may_interrupt(unmeasured), "no cost known yet: it may be long"
    scheduler.observe(unmeasured, 0.4)  # 0.1 s per row
    for i in range(10, 12):
        scheduler.add(_ticket(i, 900, clock=clock, priority=6))
    assert not scheduler.may_interrupt(scheduler.next_pass()), "0.2 s: within the target, waited for"
    scheduler.add(_ticket(20, 900, clock=clock, priority=0))
    assert not scheduler.may_interrupt(scheduler.next_pass()), "interactive work itself is never interrupted"
    off = PassScheduler(PlannerConfig(frame_budget=64 * 1024, max_batch=64), 0.0, clock)
    off.add(_ticket(30, 900, clock=clock, priority=6))
    assert not off.may_interrupt(off.next_pass()), "F5_INTERACTIVE_TARGET_MS=0: never"

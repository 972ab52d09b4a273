"""Which jobs an engine process's death is blamed on: only those in the pass that was running when it died.

The worker's side of the engine protocol, fed the messages an engine sends (no process is started: the sequence is
what matters here; the real processes die with real SIGKILLs in tests/faults/test_engine_faults.py). A job whose pass
ended, and whose audio was still being finished when the next job's pass killed the process, did nothing wrong: it
must not move towards the dead letters. (CI once dead-lettered an innocent job that way.)
"""

from __future__ import annotations

import pytest

from worker.engine.config import EngineConfig
from worker.errors import EngineLostError
from worker.runtime.host import EngineHost, _Pending


@pytest.fixture
def host():
    events: dict[str, list[list[str]]] = {"started": [], "ended": [], "lost": []}
    engines = EngineHost(EngineConfig(model="tiny-random"), [None], max_wait_s=0.0,
                         on_started=events["started"].append, on_pass_ended=events["ended"].append,
                         on_lost=events["lost"].append)
    engine = engines.engines[0]
    for ticket, job_id in ((1, "innocent"), (2, "poison"), (3, "waiting")):
        engine.pending[ticket] = _Pending(ticket, [job_id])
    return engines, engine, events


def test_a_job_whose_pass_ended_is_not_blamed_when_the_next_pass_kills_the_process(host):
    engines, engine, events = host
    engine._handle(("started", [1]))
    engine._handle(("ended", [1], None))  # its waveforms are being finished, its result not yet sent
    engine._handle(("started", [2]))
    engines._engine_died(engine, -9)
    assert events["lost"] == [["poison"]]
    assert events["started"] == [["innocent"], ["poison"]] and events["ended"] == [["innocent"]]
    assert not engine.pending  # every ticket is failed, so each task retries


def test_every_pass_of_a_job_counts_and_each_is_balanced(host):
    engines, engine, events = host
    futures = {ticket: engine.pending[ticket].future for ticket in (1, 2, 3)}
    for _ in range(2):  # a job of two chunks: two passes
        engine._handle(("started", [1, 3]))
        engine._handle(("ended", [1, 3], None))
    engine._handle(("done", 1, []))
    assert events["started"] == [["innocent", "waiting"]] * 2 and events["ended"] == events["started"]
    assert futures[1].result(0) == []
    engines._engine_died(engine, -9)
    assert events["lost"] == []
    with pytest.raises(EngineLostError, match="waiting in it"):
        futures[3].result(0)

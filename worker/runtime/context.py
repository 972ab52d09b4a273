"""Per-process state: built once when a synthesis worker starts, handed to every task.

One explicit object (engines, storage, references, runner, dead letters, chapter progress, health) instead of
scattered module globals. Building it starts the engine processes (one per visible GPU, or one on the CPU) and waits
until each is built and warmed up, so a worker never takes a job it cannot run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from worker.runtime.chapters import ChapterTracker
from worker.runtime.deadletter import DeadLetters
from worker.runtime.deliveries import LostRuns
from worker.runtime.gpus import visible_gpus
from worker.runtime.health import Health
from worker.runtime.host import EngineHost
from worker.runtime.references import ReferenceStore
from worker.runtime.runner import JobRunner, run_now
from worker.runtime.takes import TakeRecords
from worker.settings import Settings
from worker.storage import Storage, by_url

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    storage: Storage
    engines: EngineHost
    runner: JobRunner
    dead_letters: DeadLetters
    chapters: ChapterTracker
    health: Health
    takes: TakeRecords
    #: Runs Redis bookkeeping that nobody waits for and that only tidies up (a stored job's lost-run counts and dead
    #: letters cleared) on one thread, in order, a moment later (``tidy_later``).
    background: Callable[..., object] = run_now


_context: WorkerContext | None = None

#: How long tidying bookkeeping waits before it runs: past a lone job's way from its pass to its result (a few ms),
#: with which its round trips would otherwise compete for the interpreter.
TIDY_AFTER_S = 0.02


def tidy_later(thread: ThreadPoolExecutor, delay_s: float = TIDY_AFTER_S) -> Callable[..., object]:
    """Submit work to ``thread`` to run no sooner than ``delay_s`` from now; in order, as the thread takes it. For
    bookkeeping whose lateness costs nothing: a count lowered or cleared a moment later."""
    def submit(work: Callable[..., object], *args: Any) -> object:
        return thread.submit(_when_due, time.monotonic() + delay_s, work, *args)

    return submit


def _when_due(due: float, work: Callable[..., object], *args: Any) -> object:
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    return work(*args)


def engine_devices(settings: Settings) -> list[str | None]:
    """One engine process per visible GPU. Without GPUs, CPU engine processes (one torch thread each by default) to
    use every core: several single-threaded engines outrun one multi-threaded one on the small matmuls of a pass
    (bench/bench_cpu.py). One for an explicit ``F5_DEVICE``, unless ``F5_CPU_ENGINES`` says otherwise."""
    engine = settings.engine
    gpus = [] if engine.device else list(visible_gpus())
    if gpus:
        return list(gpus)
    if engine.cpu_engines is not None:
        return [None] * engine.cpu_engines
    if engine.device and not engine.device.startswith("cpu"):
        return [None]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return [None] * (1 if engine.device else max(1, cores // engine.cpu_threads))


def rows_per_pass(settings: Settings) -> int:
    """What one pass of this worker's engines holds at most: the GPU's ``F5_MAX_BATCH``, a CPU's rows per pass."""
    engine = settings.engine
    on_cpu = (engine.device or "").startswith("cpu") or not visible_gpus()
    return min(engine.max_batch, engine.cpu_rows_per_pass) if on_cpu else engine.max_batch


def build_context(settings: Settings, gather: bool, devices: list[str | None] | None = None,
                  acknowledges: bool = True) -> WorkerContext:
    """Start the engines and wire them to storage and Redis bookkeeping.

    ``gather``: tasks run in many threads (the default ``threads`` pool), so a part-full pass may wait
    ``F5_BATCH_WAIT_MS`` for companions; with one task at a time (``solo``, a ``prefork`` child) nothing is worth
    waiting for. ``devices``: the engine processes to start (default: ``engine_devices``). ``acknowledges``: this
    process acknowledges its tasks' messages (the threads and solo pools), so a job's audio may be flushed to disk
    after its result, before the acknowledgement; a prefork child's parent acknowledges, and cannot wait for that.
    """
    from worker.runtime import metrics

    storage = by_url(settings.storage.storage_url, settings.storage)
    lost_runs = LostRuns.for_results(settings.broker)
    # Redis bookkeeping off the engines' readers and off a job's way to its result, in the order it was asked for:
    # passes' starts and ends at once (a retry, which may be published at once, reads them), a stored job's counts and
    # dead letters cleared a moment later
    ledger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="f5-ledger")
    tidy = tidy_later(ThreadPoolExecutor(max_workers=1, thread_name_prefix="f5-tidy"))

    def lost(keys: list[str]) -> None:
        log.warning("job(s) %s were in the running pass of an engine process that died", ", ".join(keys)[:300])
        metrics.ENGINE_RESTARTS.inc()

    engines = EngineHost(settings.engine, devices if devices is not None else engine_devices(settings),
                         max_wait_s=settings.engine.batch_wait_ms / 1000 if gather else 0.0,
                         on_started=lambda keys: ledger.submit(lost_runs.started, keys),
                         on_pass_ended=lambda keys: ledger.submit(lost_runs.ended, keys),
                         on_lost=lost, on_pass=metrics.on_pass)
    engines.start(timeout_s=settings.broker.proc_alive_timeout)
    metrics.serve(settings.metrics.port, settings.metrics.addr)
    references = ReferenceStore(storage, settings.storage.voices_dir, settings.storage.max_reference_bytes)
    # a stored job's lost-run count is cleared a moment later, on the ledger after the pass's end it follows (a count
    # lowered after its key was deleted would come back below zero)
    runner = JobRunner(engines, storage, references, lost_runs, settings.broker.max_lost_runs,
                       background=lambda work, *args: tidy(ledger.submit, work, *args), settle_later=acknowledges)
    return WorkerContext(settings, storage, engines, runner, DeadLetters.for_results(settings.broker),
                         ChapterTracker.for_results(settings.broker), Health(engines.ready_engines),
                         TakeRecords.for_results(settings.broker), background=tidy)


def set_context(context: WorkerContext | None) -> None:
    global _context
    _context = context


def get_context() -> WorkerContext:
    if _context is None:
        raise RuntimeError("this worker has no engine: it was started with F5_WORKER_ROLE=assembler, or its "
                           "start-up failed")
    return _context

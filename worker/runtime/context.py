"""Per-process state: built once when a worker process starts, handed to every job.

One explicit object (engine, storage, voices, runner, dead letters) instead of scattered module globals. In a prefork
pool it is built in ``worker_process_init``; with the solo or thread pools (no child processes) it is built on the
first job.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from worker.runtime.batcher import DynamicBatcher
from worker.runtime.chapters import ChapterTracker
from worker.runtime.deadletter import DeadLetters
from worker.runtime.references import VoiceStore
from worker.runtime.runner import JobRunner
from worker.settings import Settings
from worker.storage import Storage, by_url

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    storage: Storage
    runner: JobRunner
    dead_letters: DeadLetters
    engine: object
    chapters: ChapterTracker


_context: WorkerContext | None = None
_lock = threading.Lock()


def build_context(settings: Settings, concurrent_tasks: bool, metrics_index: int = 0) -> WorkerContext:
    """Build the engine (the only place that imports torch), warm it up, and wire it to storage.

    ``concurrent_tasks``: tasks run in several threads of this process (``-P threads``), so jobs may wait a moment
    for each other to share passes; with one task at a time (prefork, solo) nothing is worth waiting for.
    """
    from worker.engine.engine import Engine
    from worker.runtime import metrics

    storage = by_url(settings.storage.storage_url, settings.storage)
    engine = Engine.build(settings.engine)
    if settings.engine.warmup:
        engine.warm_up()
    engine.pass_observers.append(metrics.on_pass)  # after warm-up: metrics count only passes that serve jobs
    wait_s = settings.engine.batch_wait_ms / 1000 if concurrent_tasks else 0.0
    batcher = DynamicBatcher(engine, max_wait_s=wait_s, frame_budget=settings.engine.frame_budget,
                             max_requests=settings.engine.max_batch)
    metrics.serve(settings.metrics.port, metrics_index, settings.metrics.addr)
    runner = JobRunner(batcher, storage, VoiceStore(storage, settings.storage.voices_dir))
    dead_letters = DeadLetters(settings.broker.resolved_result_backend)
    chapters = ChapterTracker(settings.broker.resolved_result_backend)
    return WorkerContext(settings, storage, runner, dead_letters, engine, chapters)


def set_context(context: WorkerContext) -> None:
    global _context
    _context = context


def get_context(settings: Settings) -> WorkerContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = build_context(settings, concurrent_tasks=True)
    return _context

"""Per-process state: built once when a worker process starts, handed to every job.

One explicit object (engine, storage, voices, runner, dead letters) instead of scattered module globals. In a prefork
pool it is built in ``worker_process_init``; with the solo or thread pools (no child processes) it is built on the
first job.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from worker.deadletter import DeadLetters
from worker.pipeline import JobRunner
from worker.settings import Settings
from worker.storage import Storage, by_url
from worker.voices import VoiceStore

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    storage: Storage
    runner: JobRunner
    dead_letters: DeadLetters
    engine: object


_context: WorkerContext | None = None
_lock = threading.Lock()


def build_context(settings: Settings) -> WorkerContext:
    """Build the engine (the only place that imports torch), warm it up, and wire it to storage."""
    from worker.engine.engine import Engine

    storage = by_url(settings.storage.storage_url, settings.storage)
    engine = Engine.build(settings.engine)
    if settings.engine.warmup:
        engine.warm_up()
    runner = JobRunner(engine, storage, VoiceStore(storage, settings.storage.voices_dir))
    dead_letters = DeadLetters(settings.broker.resolved_result_backend)
    return WorkerContext(settings, storage, runner, dead_letters, engine)


def set_context(context: WorkerContext) -> None:
    global _context
    _context = context


def get_context(settings: Settings) -> WorkerContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = build_context(settings)
    return _context

"""A QA worker's per-process state: the recogniser, built once at start-up, and the batcher that feeds it.

A QA worker (``F5_WORKER_ROLE=qa celery -A worker worker -Q f5tts-qa``) runs the threads pool: its tasks fetch takes
from storage in parallel, and the batcher gathers the takes of every task in flight into one recogniser call (up to
``F5_QA_BATCH`` takes, waiting at most a few tens of milliseconds for companions), which is where faster-whisper's
batched decoding pays. The recogniser is built before the worker takes any message; one that cannot be built (package
missing, model not found) stops the worker with the fix, instead of failing takes one by one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from worker.qa.asr import ASROptions, Recognizer, make_recognizer
from worker.qa.gate import QALimits, Take, Verdict, assess
from worker.qa.levels import VoiceLevels
from worker.runtime.takes import TakeRecords
from worker.settings import QASettings, Settings
from worker.storage import Storage, by_url

log = logging.getLogger(__name__)

GATHER_S = 0.03


def asr_options(qa: QASettings) -> ASROptions:
    return ASROptions(device=qa.device, compute_type=qa.compute_type, cpu_threads=qa.cpu_threads,
                      batch_size=qa.batch_size, local_files_only=not qa.download)


def build_recognizer(qa: QASettings) -> Recognizer:
    if not qa.asr:
        raise ValueError("a QA worker needs a recogniser: set F5_QA_ASR=pocketsphinx (English) or "
                         "F5_QA_ASR=faster-whisper:MODEL (for example large-v3, or a local CTranslate2 folder)")
    return make_recognizer(qa.asr, asr_options(qa))


class Batcher:
    """Takes from many tasks, transcribed together. One thread owns the recogniser (neither backend is safe to call
    from several threads at once)."""

    def __init__(self, recognizer: Recognizer, batch_size: int, gather_s: float = GATHER_S) -> None:
        self.recognizer = recognizer
        self.batch_size = batch_size
        self.gather_s = gather_s
        self._queue: queue.Queue[tuple[Take, QALimits, Future[Verdict]]] = queue.Queue()
        threading.Thread(target=self._loop, name="f5-qa-batcher", daemon=True).start()

    def assess(self, takes: Sequence[Take], limits: Sequence[QALimits]) -> list[Verdict]:
        futures: list[Future[Verdict]] = []
        for take, limit in zip(takes, limits, strict=True):
            future: Future[Verdict] = Future()
            self._queue.put((take, limit, future))
            futures.append(future)
        return [future.result() for future in futures]

    def _gather(self) -> list[tuple[Take, QALimits, Future[Verdict]]]:
        batch = [self._queue.get()]
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get(timeout=self.gather_s))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            by_limits: dict[QALimits, list[int]] = {}
            for index, (_, limit, _) in enumerate(batch):
                by_limits.setdefault(limit, []).append(index)
            for limit, members in by_limits.items():
                try:
                    verdicts = assess([batch[i][0] for i in members], self.recognizer, limit)
                except Exception as exc:  # each task sees the error and retries
                    for i in members:
                        batch[i][2].set_exception(exc)
                    continue
                for i, verdict in zip(members, verdicts, strict=True):
                    batch[i][2].set_result(verdict)


@dataclass
class QAContext:
    settings: Settings
    storage: Storage
    records: TakeRecords
    batcher: Batcher
    levels: VoiceLevels
    chapters: Any


_context: QAContext | None = None


def build_qa_context(settings: Settings) -> QAContext:
    from worker.runtime.chapters import ChapterTracker

    recognizer = build_recognizer(settings.qa)
    log.info("QA: recogniser %s ready", recognizer.name)
    return QAContext(settings, by_url(settings.storage.storage_url, settings.storage),
                     TakeRecords.for_results(settings.broker), Batcher(recognizer, settings.qa.batch_size),
                     VoiceLevels(), ChapterTracker.for_results(settings.broker))


def set_qa_context(context: QAContext | None) -> None:
    global _context
    _context = context


def get_qa_context() -> QAContext:
    if _context is None:
        raise RuntimeError("this worker has no recogniser: QA tasks run on a worker started with F5_WORKER_ROLE=qa")
    return _context

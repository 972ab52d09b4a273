"""Where a book stands: audio in storage, dead letters, and task states from the result backend."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from celery import Celery
from redis.exceptions import RedisError

from producer.manifest import ManifestFiles
from producer.progress import bar
from worker.books.manifest import ManifestEntry, book_dir_key, read_entries
from worker.errors import TransientError
from worker.runtime.deadletter import DeadLetters
from worker.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)


@dataclass
class BookStatus:
    total: int = 0
    done: int = 0
    failed: dict[str, dict] = field(default_factory=dict)  # job id -> reason
    states: Counter = field(default_factory=Counter)  # for segments neither done nor failed

    @property
    def finished(self) -> bool:
        return self.done + len(self.failed) >= self.total

    def summary(self) -> dict:
        return {"total": self.total, "done": self.done, "failed": len(self.failed),
                "running": self.states.get("STARTED", 0), "retrying": self.states.get("RETRY", 0),
                "revoked": self.states.get("REVOKED", 0),  # stopped by an operator or a worker: needs resume
                "queued": sum(v for k, v in self.states.items() if k not in ("STARTED", "RETRY", "REVOKED"))}


def load_entries(files: ManifestFiles, storage: Storage, prefix: str, book: str) -> list[ManifestEntry]:
    """The manifest from the local folder, or from storage when this machine did not enqueue the book."""
    entries = files.read_entries()
    if entries:
        return entries
    try:
        data = storage.get(f"{book_dir_key(prefix, book)}/manifest.jsonl")
    except ObjectNotFound:
        raise FileNotFoundError(f"no manifest for book {book!r} in {files.folder} or in {storage.url}") from None
    return list(read_entries(data.decode("utf-8").splitlines()))


def stored_keys(storage: Storage, prefix: str, book: str) -> set[str]:
    return {info.key for info in storage.list(f"{book_dir_key(prefix, book)}/")}


def task_states(app: Celery, task_ids: list[str]) -> dict[str, str]:
    backend = app.backend
    states: dict[str, str] = {}
    if not hasattr(backend, "mget"):
        return {task_id: app.AsyncResult(task_id).state for task_id in task_ids}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start : start + 500]
        values = backend.mget([backend.get_key_for_task(task_id) for task_id in chunk])
        for task_id, value in zip(chunk, values, strict=True):
            states[task_id] = json.loads(value)["status"] if value else "PENDING"
    return states


def book_status(app: Celery, storage: Storage, dead_letters: DeadLetters, entries: list[ManifestEntry],
                prefix: str, book: str, with_states: bool = True) -> BookStatus:
    status = BookStatus(total=len(entries))
    present = stored_keys(storage, prefix, book)
    pending = [e for e in entries if e.key not in present]
    status.done = status.total - len(pending)
    letters = dead_letters.all() if dead_letters.enabled else {}
    for entry in pending:
        if entry.id in letters:
            letter = letters[entry.id]
            status.failed[entry.id] = {"code": letter.code, "message": letter.message, "key": entry.key}
    if with_states:
        remaining = [e for e in pending if e.id not in status.failed]
        states = task_states(app, sorted({e.task_id for e in remaining}))
        status.states.update(states.get(e.task_id, "PENDING") for e in remaining)
    return status


def follow(app: Celery, storage: Storage, dead_letters: DeadLetters, entries: list[ManifestEntry], prefix: str,
           book: str, poll_s: float = 2.0) -> BookStatus:
    """Wait until every segment is stored or failed for good, with a progress bar."""
    started, first_done = time.monotonic(), None
    with bar() as progress:
        task = progress.add_task(f"rendering {book}", total=len(entries), rate="…")
        while True:
            try:
                status = book_status(app, storage, dead_letters, entries, prefix, book, with_states=False)
            except (ConnectionError, OSError, RedisError, TransientError) as exc:  # Redis restarting, storage blip
                log.warning("cannot read progress right now (%s); trying again", exc)
                time.sleep(poll_s)
                continue
            first_done = status.done if first_done is None else first_done
            elapsed = time.monotonic() - started
            rate = (status.done - first_done) / elapsed if elapsed > 0 else 0.0
            progress.update(task, completed=status.done + len(status.failed), rate=f"{rate:.1f}/s")
            if status.finished:
                return status
            time.sleep(poll_s)

"""Where a book stands: audio in storage, dead letters, and task states from the result backend.

Torch-free and shared: ``f5-batch status`` prints it, ``--wait`` follows it, and the gateway serves it. A segment is
done when its audio is stored, failed when it has a dead letter (and no audio), and otherwise counted by the state of
the task that carries it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

from celery import Celery
from celery.backends.base import BaseKeyValueStoreBackend

from worker.books.manifest import ManifestEntry, book_dir_key, read_entries
from worker.runtime.deadletter import DeadLetters
from worker.storage import ObjectNotFound, Storage


class Summary(TypedDict):
    total: int
    done: int
    failed: int
    running: int
    retrying: int
    revoked: int
    queued: int


@dataclass
class BookStatus:
    total: int = 0
    done: int = 0
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> reason
    states: Counter[str] = field(default_factory=Counter)  # for segments neither done nor failed
    waiting: set[str] = field(default_factory=set)  # ids of the segments neither done nor failed

    @property
    def finished(self) -> bool:
        return self.done + len(self.failed) >= self.total

    def summary(self) -> Summary:
        return {"total": self.total, "done": self.done, "failed": len(self.failed),
                "running": self.states.get("STARTED", 0), "retrying": self.states.get("RETRY", 0),
                "revoked": self.states.get("REVOKED", 0),  # stopped by an operator or a worker: needs resume
                "queued": sum(v for k, v in self.states.items() if k not in ("STARTED", "RETRY", "REVOKED"))}


def manifest_from_storage(storage: Storage, prefix: str, book: str) -> list[ManifestEntry]:
    """The manifest a producer uploaded beside the audio. FileNotFoundError if the book is unknown."""
    try:
        data = storage.get(f"{book_dir_key(prefix, book)}/manifest.jsonl")
    except ObjectNotFound:
        raise FileNotFoundError(f"no manifest for book {book!r} in {storage.url}") from None
    return list(read_entries(data.decode("utf-8").splitlines()))


def stored_keys(storage: Storage, prefix: str, book: str) -> set[str]:
    return {info.key for info in storage.list(f"{book_dir_key(prefix, book)}/")}


def task_states(app: Celery, task_ids: list[str]) -> dict[str, str]:
    backend = app.backend
    states: dict[str, str] = {}
    if not isinstance(backend, BaseKeyValueStoreBackend):  # no mget: one result at a time
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
    letters = dead_letters.by_key() if dead_letters.enabled else {}
    for entry in pending:
        if entry.key in letters:
            letter = letters[entry.key]
            status.failed[entry.id] = {"code": letter.code, "message": letter.message, "key": entry.key}
    remaining = [e for e in pending if e.id not in status.failed]
    status.waiting = {e.id for e in remaining}
    if with_states:
        states = task_states(app, sorted({e.task_id for e in remaining}))
        status.states.update(states.get(e.task_id, "PENDING") for e in remaining)
    return status

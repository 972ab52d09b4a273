"""``enqueue --assemble``: tell the workers, chapter by chapter, what a complete chapter looks like.

A chapter is closed once the stream of messages has moved past it (messages come in reading order: a message whose
first segment is in a later chapter means no later message holds this one) and every one of its messages is
published. Then its segment list goes to Redis (``worker.runtime.chapters``), and the chapter's assembly is sent at
once if all its audio is already stored; otherwise the worker storing its last segment sends it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from producer.jobs import Message
from worker.runtime.chapters import ChapterTracker

if TYPE_CHECKING:
    from celery import Celery


class ChapterCloser:
    def __init__(self, tracker: ChapterTracker, app: Celery, book: str, options: dict[str, Any]) -> None:
        self.tracker = tracker
        self.app = app
        self.book = book
        self.options = options
        self.entries: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.unconfirmed: Counter[int] = Counter()
        self.closed: set[int] = set()
        self.finalized: set[int] = set()
        self.sent = 0
        self.stored: set[str] = set()  # keys already in storage when the run began: nobody will store them again

    def produced(self, message: Message) -> None:
        chapters = [entry.chapter for entry in message.entries]
        for chapter in set(chapters):
            self.unconfirmed[chapter] += 1
        lowest = min(chapters)
        for chapter in [c for c in set(self.unconfirmed) | set(self.entries) if c < lowest]:
            self._close(chapter)

    def confirmed(self, message: Message) -> None:
        for chapter in {entry.chapter for entry in message.entries}:
            self.unconfirmed[chapter] -= 1
        for entry in message.entries:
            self.entries[entry.chapter].append(entry.model_dump())
        for chapter in {entry.chapter for entry in message.entries}:
            self._try(chapter)

    def finish(self) -> None:
        for chapter in sorted(set(self.entries) | set(self.unconfirmed)):
            self._close(chapter)

    def _close(self, chapter: int) -> None:
        self.closed.add(chapter)
        self._try(chapter)

    def _try(self, chapter: int) -> None:
        if chapter in self.finalized or chapter not in self.closed or self.unconfirmed[chapter] > 0:
            return
        self.finalized.add(chapter)
        entries = sorted(self.entries[chapter], key=lambda e: e["index"])
        self.tracker.expect(self.book, chapter, entries, self.options, stored=self.stored)
        self.sent += self.tracker.send_if_complete(self.app, self.book, chapter)

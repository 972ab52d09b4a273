"""Automatic chapter assembly: when the last segment of a chapter is stored, an assembly job goes to the CPU queue.

The producer (``enqueue --assemble``) records, when a chapter has been fully published, its manifest lines and the
output keys it needs, in a Redis hash per chapter, and adds the keys already in storage to the chapter's done set. Each
worker that stores a segment of such a chapter adds the segment's key to that set; whoever (worker or producer) sees
every needed key in it sends ``f5tts.assemble_chapter``, once per *version* of the chapter (a Redis SET NX on a digest
of its keys guards against sending it twice). Redelivered jobs are set members already, so they never count twice.

A book enqueued again after an edit is a new version of its changed chapters (their segments have new keys), so they
are assembled again; an assembly that fails for good gives its claim back, so that the next trigger (a segment stored,
``enqueue`` again) can try again. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from worker.broker.redis import RedisBookkeeping, as_text
from worker.constants import DEFAULT_CPU_QUEUE, TASK_ASSEMBLE_CHAPTER

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
TTL_S = 30 * 24 * 3600


def _key(book: str, chapter: int) -> str:
    return f"f5tts:chapter:{book}:{chapter:03d}"


class ChapterTracker(RedisBookkeeping):

    def expect(self, book: str, chapter: int, entries: list[dict[str, Any]], options: dict[str, Any],
               stored: set[str] | frozenset[str] = frozenset()) -> None:
        """Producer side: the chapter is fully published; this is what assembling it needs. ``stored``: the keys
        already in storage (segments an earlier version rendered, which nobody will store again)."""
        key = _key(book, chapter)
        needed = sorted({entry["key"] for entry in entries})
        version = hashlib.sha256("\n".join(needed).encode()).hexdigest()[:16]
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key, mapping={"needed": json.dumps(needed), "version": version,
                                "entries": json.dumps(entries, ensure_ascii=False), "options": json.dumps(options)})
        pipe.expire(key, TTL_S)
        present = [k for k in needed if k in stored]
        if present:
            pipe.sadd(f"{key}:done", *present)
        pipe.expire(f"{key}:done", TTL_S)
        pipe.execute()

    def mark_stored(self, book: str, chapter: int, segment_key: str) -> bool:
        """Worker side: one segment is stored. True when this made the chapter complete."""
        key = _key(book, chapter)
        added = self._client.sadd(f"{key}:done", segment_key)
        self._client.expire(f"{key}:done", TTL_S)
        return bool(added) and self.complete(book, chapter)

    def complete(self, book: str, chapter: int) -> bool:
        key = _key(book, chapter)
        needed = self._client.hget(key, "needed")
        if needed is None:
            return False
        keys = json.loads(needed)
        return not keys or all(self._client.smismember(f"{key}:done", keys))

    def _claim_key(self, book: str, chapter: int) -> str | None:
        version = self._client.hget(_key(book, chapter), "version")
        return None if version is None else f"{_key(book, chapter)}:assembling:{as_text(version)}"

    def claim(self, book: str, chapter: int) -> bool:
        """Only the first caller gets to send the assembly job of this version of the chapter."""
        claim = self._claim_key(book, chapter)
        return claim is not None and bool(self._client.set(claim, "1", nx=True, ex=TTL_S))

    def release(self, book: str, chapter: int) -> None:
        """The assembly failed for good: the next trigger may send it again."""
        claim = self._claim_key(book, chapter)
        if claim is not None:
            self._client.delete(claim)

    def spec(self, book: str, chapter: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        entries, options = self._client.hmget(_key(book, chapter), ["entries", "options"])
        if entries is None or options is None:
            raise KeyError(f"no chapter record for {book} {chapter}")
        return json.loads(entries), json.loads(options)

    def send_if_complete(self, app: Celery, book: str, chapter: int) -> bool:
        if self.complete(book, chapter) and self.claim(book, chapter):
            app.send_task(TASK_ASSEMBLE_CHAPTER, kwargs={"book": book, "chapter": chapter}, queue=DEFAULT_CPU_QUEUE)
            log.info("chapter %d of %s is complete: assembly sent to %s", chapter, book, DEFAULT_CPU_QUEUE)
            return True
        return False

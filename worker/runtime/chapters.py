"""Automatic chapter assembly: when the last segment of a chapter is stored, an assembly job goes to the CPU queue.

The producer (``enqueue --assemble``) records, when a chapter has been fully published, how many segments it has and
their manifest lines, in a Redis hash per chapter. Each worker that stores a segment of such a chapter adds the
segment to the chapter's done set; whoever (worker or producer) sees the set complete sends ``f5tts.assemble_chapter``
once (a Redis SETNX guards against sending it twice). Redelivered jobs are set members already, so they never count
twice. Torch-free.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from worker.broker.redis import RedisBookkeeping
from worker.constants import DEFAULT_CPU_QUEUE, TASK_ASSEMBLE_CHAPTER

log = logging.getLogger(__name__)
TTL_S = 30 * 24 * 3600


def _key(book: str, chapter: int) -> str:
    return f"f5tts:chapter:{book}:{chapter:03d}"


class ChapterTracker(RedisBookkeeping):

    def expect(self, book: str, chapter: int, entries: list[dict[str, Any]], options: dict[str, Any]) -> None:
        """Producer side: the chapter is fully published; this is what assembling it needs."""
        key = _key(book, chapter)
        self._client.hset(key, mapping={"expected": len(entries), "entries": json.dumps(entries, ensure_ascii=False),
                                        "options": json.dumps(options)})
        self._client.expire(key, TTL_S)

    def mark_stored(self, book: str, chapter: int, job_id: str) -> bool:
        """Worker side: one segment is stored. True when this made the chapter complete."""
        key = _key(book, chapter)
        added = self._client.sadd(f"{key}:done", job_id)
        self._client.expire(f"{key}:done", TTL_S)
        return bool(added) and self.complete(book, chapter)

    def complete(self, book: str, chapter: int) -> bool:
        key = _key(book, chapter)
        expected = self._client.hget(key, "expected")
        return expected is not None and self._client.scard(f"{key}:done") >= int(expected)

    def claim(self, book: str, chapter: int) -> bool:
        """Only the first caller gets to send the assembly job."""
        return bool(self._client.set(f"{_key(book, chapter)}:assembling", "1", nx=True, ex=TTL_S))

    def spec(self, book: str, chapter: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        raw = self._client.hmget(_key(book, chapter), ["entries", "options"])
        if raw[0] is None:
            raise KeyError(f"no chapter record for {book} {chapter}")
        return json.loads(raw[0]), json.loads(raw[1])

    def send_if_complete(self, app, book: str, chapter: int) -> bool:
        if self.complete(book, chapter) and self.claim(book, chapter):
            app.send_task(TASK_ASSEMBLE_CHAPTER, kwargs={"book": book, "chapter": chapter}, queue=DEFAULT_CPU_QUEUE)
            log.info("chapter %d of %s is complete: assembly sent to %s", chapter, book, DEFAULT_CPU_QUEUE)
            return True
        return False

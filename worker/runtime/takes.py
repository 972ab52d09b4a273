"""The quality gate's record of each segment: every take's seed and verdict, which take is kept, and its state.

One Redis string per segment (JSON), keyed by book and output key, and a set per book that indexes them, on the
results Redis beside the dead letters. A segment's output key follows its content (text, voice, parameters), so a
record never mixes takes of two texts; a record that finds different text under the same key (a caller that reuses
keys) starts over. Updates are optimistic transactions on the one segment's key (``WATCH``), so the QA workers and the
review page never lose each other's writes, and a redelivered check adds nothing twice.

States: ``pending`` (takes to come), ``passed`` (the first take passed), ``rerendered`` (a later take passed and is
the kept one), ``needs_review`` (no take passed in the attempts allowed; the best is kept), ``accepted`` (a person
accepted the kept take on the review page).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from worker.broker.redis import RedisBookkeeping, as_text
from worker.qa.gate import Verdict

TTL_S = 180 * 24 * 3600
NO_BOOK = "_"
State = Literal["pending", "passed", "rerendered", "needs_review", "accepted"]
FLAGGED: tuple[State, ...] = ("needs_review",)


class TakeRecord(BaseModel):
    attempt: int
    seed: int
    key: str  # where the take is stored
    verdict: Verdict
    manual: bool = False  # rendered on request (the review page, `f5-batch rerender`)
    at: float = Field(default_factory=time.time)

    @property
    def passed(self) -> bool:
        return self.verdict.passed


class SegmentTakes(BaseModel):
    book: str | None
    key: str  # the segment's output key: where the kept take is
    job_id: str
    text: str
    lang: str | None = None
    max_attempts: int = 3
    asr: bool = False
    state: State = "pending"
    attempts: list[TakeRecord] = Field(default_factory=list)
    best: int | None = None  # the attempt to keep
    at_key: int = 1  # the attempt whose audio is at ``key``
    reserved: int = 0  # the highest attempt number handed out for a take by hand (two at once never share one)
    updated: float = Field(default_factory=time.time)
    job: dict[str, Any] | None = None  # the job as sent for its first take: what a re-render sends again

    def take(self, attempt: int) -> TakeRecord | None:
        return next((t for t in self.attempts if t.attempt == attempt), None)

    @property
    def kept(self) -> TakeRecord | None:
        return self.take(self.best) if self.best is not None else None


class TakeRecords(RedisBookkeeping):
    def _key(self, book: str | None, key: str) -> str:
        return f"f5tts:qa:{book or NO_BOOK}:{key}"

    def _index(self, book: str | None) -> str:
        return f"f5tts:qa:{book or NO_BOOK}:index"

    def get(self, book: str | None, key: str) -> SegmentTakes | None:
        raw = self._client.get(self._key(book, key))
        return SegmentTakes.model_validate_json(raw) if raw else None

    def all(self, book: str | None) -> list[SegmentTakes]:
        keys = sorted(as_text(k) for k in self._client.smembers(self._index(book)))
        records = []
        for start in range(0, len(keys), 500):
            for raw in self._client.mget([self._key(book, k) for k in keys[start : start + 500]]):
                if raw:
                    records.append(SegmentTakes.model_validate_json(raw))
        return records

    def by_key(self, book: str | None, keys: Iterable[str]) -> dict[str, SegmentTakes]:
        keys = list(keys)
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key, raw in zip(chunk, self._client.mget([self._key(book, k) for k in chunk]), strict=True):
                if raw:
                    found[key] = SegmentTakes.model_validate_json(raw)
        return found

    def update(self, book: str | None, key: str,
               change: Callable[[SegmentTakes | None], SegmentTakes | None]) -> SegmentTakes | None:
        """Apply ``change`` to the segment's record atomically (retried if another writer got there first);
        ``change`` returns the new record, or None to leave it as it is."""
        name = self._key(book, key)
        result: list[SegmentTakes | None] = [None]

        def transaction(pipe: Any) -> None:
            raw = pipe.get(name)
            current = SegmentTakes.model_validate_json(raw) if raw else None
            updated = change(current)
            result[0] = updated if updated is not None else current
            if updated is None:
                return
            updated.updated = time.time()
            pipe.multi()
            pipe.set(name, json.dumps(updated.model_dump(mode="json"), ensure_ascii=False), ex=TTL_S)
            pipe.sadd(self._index(book), key)
            pipe.expire(self._index(book), TTL_S)

        self._client.transaction(transaction, name)
        return result[0]

    def forget(self, book: str | None, keys: list[str]) -> None:
        """Records of segments that are no longer in the book (an edit replaced them)."""
        if keys:
            self._client.delete(*[self._key(book, k) for k in keys])
            self._client.srem(self._index(book), *keys)

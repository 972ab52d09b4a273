"""Dead letters: jobs that failed for good (bad input, time limit, a process lost every time, retries exhausted), kept
where the CLI and the gateway can list them.

A Redis hash (``f5tts:failed``) keyed by the job's identity (its output key and content, ``Job.identity``: never the id
a caller chose, which two unrelated jobs may share), each value a JSON record with the reason, and a sorted set of the
same ids by time. Under ``noeviction`` nothing would ever clear the hash, so each write also drops the letters older
than ``F5_DEAD_LETTER_TTL`` (30 days by default) and sets the keys to expire after that long. A later success of the
same job removes its entry, so the hash only holds jobs that still need attention.

Tasks write the dead letter *before* they let the failure be stored: a client that reads a FAILURE always finds the
letter.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from worker.broker.redis import RedisBookkeeping, as_text
from worker.constants import FAILED_JOBS_INDEX_KEY, FAILED_JOBS_KEY

if TYPE_CHECKING:
    from typing_extensions import Self

    from worker.settings import BrokerSettings

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True)
class DeadLetter:
    identity: str
    job_id: str
    key: str | None
    task_id: str | None
    task: str
    code: str
    message: str
    field: str | None
    retries: int
    at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class DeadLetters(RedisBookkeeping):
    ttl_s: int = DEFAULT_TTL_S

    @classmethod
    def for_results(cls, broker: BrokerSettings) -> Self:
        letters = super().for_results(broker)
        letters.ttl_s = broker.dead_letter_ttl
        return letters

    def record(self, letters: list[DeadLetter]) -> None:
        """Store letters (one round trip); raises if Redis cannot take them, so the caller can retry."""
        if not self.enabled or not letters:
            return
        cutoff = time.time() - self.ttl_s
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(FAILED_JOBS_KEY, mapping={letter.identity: letter.to_json() for letter in letters})
        pipe.zadd(FAILED_JOBS_INDEX_KEY, {letter.identity: letter.at for letter in letters})
        pipe.expire(FAILED_JOBS_KEY, self.ttl_s)
        pipe.expire(FAILED_JOBS_INDEX_KEY, self.ttl_s)
        pipe.execute()
        stale = self._client.zrangebyscore(FAILED_JOBS_INDEX_KEY, "-inf", cutoff)
        if stale:
            pipe = self._client.pipeline(transaction=True)
            pipe.hdel(FAILED_JOBS_KEY, *stale)
            pipe.zrem(FAILED_JOBS_INDEX_KEY, *stale)
            pipe.execute()

    def clear(self, identities: list[str]) -> None:
        if not self.enabled or not identities:
            return
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hdel(FAILED_JOBS_KEY, *identities)
            pipe.zrem(FAILED_JOBS_INDEX_KEY, *identities)
            pipe.execute()
        except Exception as exc:  # a stale letter is harmless: the audio exists, and status counts it as done
            log.warning("could not clear dead letters: %s", exc)

    def all(self) -> dict[str, DeadLetter]:
        """Every letter, by identity. (Letters written before identities existed are filed by their job id.)"""
        raw = self._client.hgetall(FAILED_JOBS_KEY) if self.enabled else {}
        letters = {}
        for key, value in raw.items():
            record = json.loads(value)
            record.setdefault("identity", as_text(key))
            letters[as_text(key)] = DeadLetter(**record)
        return letters

    def by_key(self) -> dict[str, DeadLetter]:
        """The newest letter of each output key: how a book finds its failed segments (keys are unique per book)."""
        letters: dict[str, DeadLetter] = {}
        for letter in sorted(self.all().values(), key=lambda item: item.at):
            if letter.key:
                letters[letter.key] = letter
        return letters

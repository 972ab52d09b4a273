"""Dead letters: jobs that failed for good (bad input, or retries exhausted), kept where the CLI can list them.

A Redis hash (``f5tts:failed``) keyed by job id, each value a JSON record with the reason. A later success of the
same job id removes its entry, so the hash only ever holds jobs that still need attention.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from worker.broker.redis import RedisBookkeeping
from worker.constants import FAILED_JOBS_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
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

    def record(self, letter: DeadLetter) -> None:
        if not self.enabled:
            return
        try:
            self._client.hset(FAILED_JOBS_KEY, letter.job_id, letter.to_json())
        except Exception as exc:  # never let bookkeeping mask the job's own outcome
            log.error("could not record dead letter for %s: %s", letter.job_id, exc)

    def clear(self, job_ids: list[str]) -> None:
        if not self.enabled or not job_ids:
            return
        try:
            self._client.hdel(FAILED_JOBS_KEY, *job_ids)
        except Exception as exc:
            log.warning("could not clear dead letters: %s", exc)

    def all(self) -> dict[str, DeadLetter]:
        raw = self._client.hgetall(FAILED_JOBS_KEY) if self.enabled else {}
        return {key.decode(): DeadLetter(**json.loads(value)) for key, value in raw.items()}


"""How many times a job's run ended with its process dead: the count that stops a poison job.

A job that crashes the process running it (a segfault in native code, an OOM kill, a CUDA abort) would otherwise be
retried or redelivered forever, each time costing an engine restart and taking its companions down with it. Each job
id has a counter in Redis (with an expiry): it goes up when a pass holding the job starts, and back down when the
pass ends, whatever its outcome. A pass that never ends, because its engine process or the whole worker died, leaves
the count raised. The next delivery reads it (the message put back, a retry, or the job sent again in a new message by
a client or a resumed producer):

- 0: the job runs normally;
- 1 to N-1: the job runs in passes of its own, so that it cannot take companions down again;
- N (``F5_MAX_LOST_RUNS``, default 3): the job is dead-lettered with code ``worker_lost`` and not run again.

Jobs that were only waiting when a process died are not counted: they did nothing wrong.

A second mark, per job, says it must run alone: it overran its time limit while it shared passes with other jobs, so
it is retried on its own, and only a job that overruns alone fails for good. Both are keyed by the job's identity (its
output and content, ``Job.identity``), never by the id a caller chose, so unrelated jobs never share a count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from worker.broker.redis import RedisBookkeeping
from worker.constants import LOST_RUNS_KEY_PREFIX, RUN_ALONE_KEY_PREFIX

log = logging.getLogger(__name__)

TTL_S = 7 * 24 * 3600


class LostRuns(RedisBookkeeping):

    def _keys(self, job_ids: list[str]) -> list[str]:
        return [f"{LOST_RUNS_KEY_PREFIX}{job_id}" for job_id in job_ids]

    def _add(self, job_ids: list[str], amount: int) -> None:
        if not self.enabled or not job_ids:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in self._keys(job_ids):
                pipe.incrby(key, amount)
                pipe.expire(key, TTL_S)
            pipe.execute()
        except Exception as exc:  # bookkeeping must not fail a job; the worst case is a poison job found later
            log.warning("could not update lost-run counts: %s", exc)

    def started(self, job_ids: list[str]) -> None:
        """A pass holding these jobs starts: count it as lost until it ends."""
        self._add(job_ids, 1)

    def ended(self, job_ids: list[str]) -> None:
        """The pass ended, well or badly, with its process alive."""
        self._add(job_ids, -1)

    def counts(self, job_ids: list[str]) -> dict[str, int]:
        return {job_id: lost for job_id, (lost, _) in self.history(job_ids).items() if lost}

    def history(self, job_ids: list[str]) -> dict[str, tuple[int, bool]]:
        """Per job with any history: (lost runs, must run alone). One round trip."""
        return self.ask_history(job_ids)()

    def ask_history(self, job_ids: list[str]) -> Callable[[], dict[str, tuple[int, bool]]]:
        """``history``, asked now and answered when called: the caller's own work meanwhile (a job's skip check and
        reference) overlaps the round trip instead of following it. Call the answer once: it gives the connection
        back. If the overlapped read fails (a stale connection, a failover), the answer reads again through the
        client, with its retries; a Redis that cannot answer at all means no history (the job runs), as always."""
        if not self.enabled or not job_ids:
            return dict
        keys = [*self._keys(job_ids), *(f"{RUN_ALONE_KEY_PREFIX}{i}" for i in job_ids)]
        pool = self._client.connection_pool
        connection: Any = None  # redis-py leaves its connections' methods untyped
        try:
            connection = pool.get_connection()
            connection.send_command("MGET", *keys)
        except Exception:
            self._discard(pool, connection)
            connection = None
        answered = False

        def answer() -> dict[str, tuple[int, bool]]:
            nonlocal answered
            if answered:
                raise RuntimeError("a lost-run history is answered once")
            answered = True
            values = None
            if connection is not None:
                try:
                    values = connection.read_response()
                except Exception:
                    self._discard(pool, connection)  # its reply may still come: never read by another command
                else:
                    pool.release(connection)
            if values is None:
                try:
                    values = self._client.mget(keys)
                except Exception as exc:
                    log.warning("could not read lost-run counts: %s", exc)
                    return {}
            lost, alone = values[: len(job_ids)], values[len(job_ids) :]
            return {job_id: (max(0, int(count or 0)), bool(flag))
                    for job_id, count, flag in zip(job_ids, lost, alone, strict=True) if count or flag}

        return answer

    @staticmethod
    def _discard(pool: Any, connection: Any) -> None:
        if connection is not None:
            connection.disconnect()
            pool.release(connection)

    def run_alone(self, job_ids: list[str]) -> None:
        """These jobs overran their time limit in shared passes: their next run is alone."""
        if not self.enabled or not job_ids:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.set(f"{RUN_ALONE_KEY_PREFIX}{job_id}", 1, ex=TTL_S)
            pipe.execute()
        except Exception as exc:
            log.warning("could not mark jobs to run alone: %s", exc)

    def forget(self, job_ids: list[str]) -> None:
        """The job is stored (or dead-lettered): its history no longer matters."""
        if self.enabled and job_ids:
            try:
                self._client.delete(*self._keys(job_ids), *(f"{RUN_ALONE_KEY_PREFIX}{i}" for i in job_ids))
            except Exception as exc:
                log.warning("could not clear lost-run counts: %s", exc)

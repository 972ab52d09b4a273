"""A worker holds many messages at once and serves them in turn: one may wait, unacknowledged, longer than the
visibility timeout. kombu's sweep then gave it to a second worker, and the job ran twice. Live workers now renew what
they hold (``worker.broker.visibility``). Real parts: a real Redis, two real workers, real jobs; the visibility timeout
is short so that the first worker's backlog outlasts it several times over."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, queued, wait_until

pytestmark = pytest.mark.timeout(500)


def test_messages_a_live_worker_holds_past_the_visibility_timeout_are_not_run_twice(
        redis_server, prepared_random_weights, service_dir, tmp_path, ref_wav_bytes):
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    queue = own_queue("held")
    # Short passes (four rows each) keep every job's own run far inside its time limit, while the backlog of 96 jobs
    # takes several visibility timeouts to drain.
    env = worker_env(redis_server.url, f"file://{store}", prepared_random_weights, F5_QUEUE=queue,
                     VISIBILITY_TIMEOUT="12", TASK_TIME_LIMIT="10", TASK_SOFT_TIME_LIMIT="8", F5_MAX_BATCH="4")
    holder = WorkerProcess(env, service_dir / "logs", concurrency=128).start()
    other = None
    try:
        client = plain_celery(redis_server.url)
        text = "Con esto, el caballero siguió su camino por la llanura, sin otro cuidado que el de su fama."
        results = [client.send_task("f5tts.synthesize", queue=queue, kwargs={"job": {
            **job(f"{text} Frase {i}.", f"held/{i:02d}.wav", nfe_step=8), "job_id": f"held-{i:02d}"}})
            for i in range(96)]
        wait_until(lambda: queued(redis_server.client(), queue) == 0, 60, "the first worker to take every message")
        taken = time.monotonic()
        other = WorkerProcess(env, service_dir / "logs", concurrency=4).start()  # free to take anything restored
        outputs = [r.get(timeout=400) for r in results]
        assert sorted(o["key"] for o in outputs) == [f"held/{i:02d}.wav" for i in range(96)]
        logs = holder.log() + other.log()
        assert "retry:" not in logs, "a job was retried: the test cannot tell a redelivery from a retry"
        assert time.monotonic() - taken > 2 * 12, "the backlog drained too fast to outlast the visibility timeout"
        received: dict[str, int] = {}
        for log in (holder.log(), other.log()):
            for task_id in re.findall(r"Task f5tts\.synthesize\[([0-9a-f-]+)\] received", log):
                received[task_id] = received.get(task_id, 0) + 1
        twice = {task_id: n for task_id, n in received.items() if n > 1}
        assert not twice, f"{len(twice)} job(s) handed out again while their worker still held them"
    finally:
        holder.stop()
        if other is not None:
            other.stop()

"""Time limits judge a job by its own run: a job that overruns while it shares passes with many others (a loaded
machine, a crowded pass) is retried in passes of its own, and only a job that overruns alone fails. Real worker, real
engine process, real passes; the soft limit is short so that a crowded pass overruns it and a lone one (about a
second here) does not."""

from __future__ import annotations

import re

import pytest

from tests.conftest import VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, letters_by_job_id

pytestmark = pytest.mark.timeout(500)


def test_jobs_that_overrun_a_shared_pass_are_retried_alone_and_complete(
        redis_server, prepared_random_weights, service_dir, tmp_path, ref_wav_bytes):
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    queue = own_queue("sharedlimit")
    env = worker_env(redis_server.url, f"file://{store}", prepared_random_weights, F5_QUEUE=queue,
                     TASK_SOFT_TIME_LIMIT="8", TASK_TIME_LIMIT="60", VISIBILITY_TIMEOUT="120",
                     F5_BATCH_WAIT_MS="2000")  # gather them all into one crowded pass
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        client = plain_celery(redis_server.url)
        text = "Y así, sin decir nada a nadie, salió al campo por la puerta falsa del corral."
        batch = client.send_task("f5tts.synthesize_batch", queue=queue, kwargs={"jobs": [
            {**job(f"{text} Número {i}.", f"shared/{i:02d}.wav", nfe_step=8), "job_id": f"shared-{i:02d}"}
            for i in range(32)]})
        items = batch.get(timeout=400)
        assert [item["result"]["key"] for item in items] == [f"shared/{i:02d}.wav" for i in range(32)]
        log = worker.log()
        assert re.search(r"retry: .*SharedTimeLimitError", log), "no job overran its shared pass: nothing was tested"
        assert not {f"shared-{i:02d}" for i in range(32)} & set(letters_by_job_id(redis_server.client()))
    finally:
        worker.stop()

"""A failure is recorded before anyone can see it, and a job past its time limit lets the next one go.

- Celery stores a task's FAILURE and only then calls ``on_failure``; a client polling the result could find the
  failure and no dead letter. The tasks record the letter first. Checked over many bad jobs, by reading each result
  the moment it is stored.
- A job past its soft time limit is abandoned, and its pass stops at the next step: the job behind it never waits
  for the abandoned pass to finish (which would take minutes here).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REF_TEXT, VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, letters_by_job_id, wait_until
from worker.constants import FAILED_JOBS_KEY
from worker.contract import Job

pytestmark = pytest.mark.timeout(400)


def _bad_jobs() -> list[dict]:
    kinds = [
        {"params": {"nfe_step": 500}},  # refused by the contract
        {"text": "🙂😀🎉"},  # refused by the engine: nothing it can read
        {"voice": {"ref_audio": "voices/nobody.wav", "ref_text": REF_TEXT}},  # refused on fetching the reference
        {"output": {"key": "voices/overwrite-the-narrator.wav"}},  # reserved prefix
    ]
    jobs = []
    for index in range(40):
        payload = {**job(f"Frase mala número {index}.", f"order/{index:02d}.wav"), **kinds[index % len(kinds)]}
        jobs.append({**payload, "job_id": f"order-{index:02d}"})
    return jobs


def test_a_failure_is_never_readable_before_its_dead_letter(s3_worker, redis_server):
    client, redis = plain_celery(redis_server.url), redis_server.client()
    redis.delete(FAILED_JOBS_KEY)
    jobs = _bad_jobs()
    sent = {j["job_id"]: client.send_task("f5tts.synthesize", kwargs={"job": j}, queue="f5tts") for j in jobs}
    batch = client.send_task("f5tts.synthesize_batch", queue="f5tts", kwargs={"jobs": [
        {**job("Lote demasiado grande.", f"order/big-{i}.wav"), "job_id": f"order-big-{i:02d}"} for i in range(65)]})
    sent["order-big-00"] = batch
    seen, early = set(), []

    def poll() -> bool:
        for job_id, result in sent.items():
            if job_id in seen:
                continue
            raw = redis.get(f"celery-task-meta-{result.id}")
            if raw and json.loads(raw)["status"] == "FAILURE":
                seen.add(job_id)
                if job_id not in letters_by_job_id(redis):  # read after the failure: must already be there
                    early.append(job_id)
        return len(seen) == len(sent)

    wait_until(poll, 180, "every bad job to fail", interval=0.001)
    assert early == [], f"failures readable before their dead letter: {early}"
    letters = letters_by_job_id(redis)
    assert {letters[f"order-{i:02d}"]["code"] for i in range(40)} == {"invalid_job", "bad_text", "unknown_voice",
                                                                       "bad_key"}
    # a batch that fails as a whole leaves a letter for each of its jobs
    assert all(letters[f"order-big-{i:02d}"]["code"] == "invalid_job" for i in range(65))


def test_after_a_job_passes_its_soft_limit_the_next_job_does_not_wait_for_its_pass(
        redis_server, prepared_random_weights, service_dir, tmp_path, ref_wav_bytes):
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    queue = own_queue("softlimit")
    env = worker_env(redis_server.url, f"file://{store}", prepared_random_weights, F5_QUEUE=queue,
                     TASK_SOFT_TIME_LIMIT="4", TASK_TIME_LIMIT="600", VISIBILITY_TIMEOUT="700")
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        client = plain_celery(redis_server.url)
        # minutes of work in one pass at NFE 128: any wait behind it would be obvious
        long_text = ", ".join(["y el hidalgo siguió su camino por la llanura de la Mancha"] * 60) + "."
        slow_job = {**job(long_text, "soft/slow.wav", nfe_step=128, speed=0.5), "job_id": "soft-slow"}
        slow = client.send_task("f5tts.synthesize", queue=queue, kwargs={"job": slow_job})
        lost_key = f"f5tts:lost:{Job.model_validate(slow_job).identity()}"
        wait_until(lambda: redis_server.client().get(lost_key) == b"1", 60, "the slow pass to start")
        quick = client.send_task("f5tts.synthesize", queue=queue, kwargs={"job": {
            **job("Después, una frase corta.", "soft/quick.wav", nfe_step=4), "job_id": "soft-quick"}})
        with pytest.raises(Exception, match="time_limit"):
            slow.get(timeout=120)
        assert quick.get(timeout=120)["key"] == "soft/quick.wav"
        wait_until(lambda: f"{quick.id}] succeeded" in worker.log(), 30, "the quick job's success line")
        log = worker.log()
        stopped = re.search(r"pass of \d+ rows stopped: abandoned after (\d+) of 128 steps", log)
        assert stopped and int(stopped.group(1)) < 128, "the abandoned pass was not stopped"
        assert log.index(stopped.group(0)) < log.index(f"{quick.id}] succeeded")
        letter = letters_by_job_id(redis_server.client())["soft-slow"]
        assert letter["code"] == "time_limit"
        assert not (store / "soft" / "slow.wav").exists()
    finally:
        worker.stop()

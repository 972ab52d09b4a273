"""Jobs that take their process down, and a device that is lost, with real worker and engine processes.

Two faults cannot happen on demand here, so a test-only hook (``F5_TEST_FAULTS``, see ``worker.engine.faults``)
makes them: a job whose pass SIGKILLs its own engine process (a real SIGKILL, as a segfault in native code or an OOM
kill would deliver), and the error a lost CUDA context raises (no GPU here). Everything after is the real handling.
"""

from __future__ import annotations

import pytest

from tests.conftest import VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, letters_by_job_id, wait_until

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def local_store(tmp_path, ref_wav_bytes):
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    return store


def test_a_job_that_kills_its_process_every_time_is_dead_lettered_and_the_others_complete(
        redis_server, prepared_random_weights, service_dir, local_store):
    queue = own_queue("poison")
    env = worker_env(redis_server.url, f"file://{local_store}", prepared_random_weights, F5_QUEUE=queue,
                     F5_TEST_FAULTS="kill:VENENO", F5_MAX_LOST_RUNS="3", F5_BATCH_WAIT_MS="300")
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        client = plain_celery(redis_server.url)
        poison = {**job("Una frase con VENENO dentro.", "poison/bad.wav"), "job_id": "poison-bad"}
        sent = [client.send_task("f5tts.synthesize", kwargs={"job": poison}, queue=queue)]
        good = [{**job(f"Frase inocente número {i}.", f"poison/good-{i:02d}.wav"), "job_id": f"poison-good-{i}"}
                for i in range(20)]
        sent += [client.send_task("f5tts.synthesize", kwargs={"job": g}, queue=queue) for g in good]
        with pytest.raises(Exception, match="worker_lost"):
            sent[0].get(timeout=300)
        outputs = [result.get(timeout=300) for result in sent[1:]]
        assert sorted(o["key"] for o in outputs) == sorted(g["output"]["key"] for g in good)
        letter = letters_by_job_id(redis_server.client())["poison-bad"]
        assert letter["code"] == "worker_lost" and "died 3 times" in letter["message"]
        assert sent[0].state == "FAILURE"
        log = worker.log()
        assert log.count("exited with code -9") == 3  # one engine per delivery that ran it, no more
        assert sorted(p.name for p in (local_store / "poison").iterdir()) == sorted(
            f"good-{i:02d}.wav" for i in range(20))
        assert worker.process.poll() is None and len(worker.children()) == 1
    finally:
        worker.stop()


def test_a_lost_device_gets_a_fresh_engine_process_and_the_job_completes(
        redis_server, prepared_random_weights, service_dir, local_store, tmp_path):
    marker = tmp_path / "lose-the-device"
    queue = own_queue("cudafault")
    env = worker_env(redis_server.url, f"file://{local_store}", prepared_random_weights, F5_QUEUE=queue,
                     F5_TEST_FAULTS=f"cuda-fatal-once:{marker}")
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        first_engine = worker.children()[0].pid
        marker.touch()  # the next pass meets "CUDA error: an illegal memory access was encountered"
        result = plain_celery(redis_server.url).send_task(
            "f5tts.synthesize", kwargs={"job": {**job("Tras el fallo, la frase.", "fault/after.wav"),
                                                "job_id": "after-fault"}}, queue=queue)
        assert result.get(timeout=180)["key"] == "fault/after.wav"
        assert not marker.exists()
        log = worker.log()
        assert "Engine-0 lost its device: CUDA error: an illegal memory access" in log
        assert f"Engine-0 (pid {first_engine}) exited with code 70" in log
        wait_until(lambda: worker.children() and worker.children()[0].pid != first_engine, 60, "a fresh engine")
        assert (local_store / "fault" / "after.wav").is_file()
        assert "after-fault" not in letters_by_job_id(redis_server.client())
    finally:
        worker.stop()


def test_a_job_at_its_lost_run_limit_is_dead_lettered_in_any_message_and_never_run(
        redis_server, prepared_random_weights, service_dir, local_store):
    """A job's lost-run count (``worker.runtime.deliveries``) is read for every message that carries it: a retry, or
    the same job sent again in a fresh message (a client that retries, a resumed producer). A job at the limit is
    dead-lettered before it reaches an engine; a companion in the same batch runs. (The count is read while the skip
    checks run: one round trip beside them.)"""
    from worker.constants import LOST_RUNS_KEY_PREFIX
    from worker.runtime.runner import parse_job

    queue = own_queue("lostreads")
    env = worker_env(redis_server.url, f"file://{local_store}", prepared_random_weights, F5_QUEUE=queue,
                     F5_MAX_LOST_RUNS="3")
    fresh = {**job("Una frase que ya murió tres veces.", "lostreads/fresh.wav"), "job_id": "fresh"}
    again = {**job("Otra frase que ya murió tres veces.", "lostreads/again.wav"), "job_id": "again"}
    companion = {**job("Una frase sin historia.", "lostreads/companion.wav"), "job_id": "companion"}
    for counted in (fresh, again):  # as three deaths leave them
        redis_server.client().set(f"{LOST_RUNS_KEY_PREFIX}{parse_job(counted).identity()}", 3)
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        client = plain_celery(redis_server.url)
        retried = client.send_task("f5tts.synthesize", kwargs={"job": again}, queue=queue, retries=1)
        batch = client.send_task("f5tts.synthesize_batch", kwargs={"jobs": [fresh, companion]}, queue=queue)
        with pytest.raises(Exception, match="worker_lost"):
            retried.get(timeout=180)
        with pytest.raises(Exception, match="1 of 2 jobs failed") as failure:
            batch.get(timeout=180)
        assert [entry["ok"] for entry in failure.value.args[1]] == [False, True]
        letters = letters_by_job_id(redis_server.client())
        assert letters["again"]["code"] == letters["fresh"]["code"] == "worker_lost"
        assert "companion" not in letters
        assert sorted(p.name for p in (local_store / "lostreads").iterdir()) == ["companion.wav"]
        assert "exited with code" not in worker.log()  # no engine was put at risk
    finally:
        worker.stop()

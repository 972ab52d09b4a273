"""Redis (AOF on, as in production) restarted while jobs are queued and the producer is publishing: every job
completes, and the worker and the producer reconnect on their own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REF_TEXT, cli, two_chapters, worker_env
from tests.netcut import CuttableProxy
from tests.services import RedisServer, WorkerProcess, queued, wait_until

pytestmark = pytest.mark.timeout(600)


def test_redis_restart_while_queued_and_publishing(prepared_random_weights, service_dir, tmp_path, quijote_path,
                                                   ref_wav_path):
    redis = RedisServer(tmp_path / "aof-redis", appendonly=True).start()
    env = worker_env(redis.url, f"file://{tmp_path / 'store'}", prepared_random_weights, F5_QUEUE="restart",
                     VISIBILITY_TIMEOUT="20", TASK_TIME_LIMIT="15", TASK_SOFT_TIME_LIMIT="12")
    worker = None
    try:
        assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
        corpus = two_chapters(quijote_path, tmp_path, until="Capítulo II.")  # chapter I: about 60 segments
        command = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(corpus), "--book", "aof",
                   "--voice", "narrador", "--batch-size", "1", "--nfe-step", "2", "--max-queued", "40",
                   "--manifest-dir", str(tmp_path / "m")]
        producer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: queued(redis.client(), "restart") >= 30, 60, "jobs to queue up")
        queued_before = queued(redis.client(), "restart")
        redis.restart()  # SIGTERM: Redis writes its AOF and exits; the same port and folder come back
        assert queued(redis.client(), "restart") >= queued_before - 1, "AOF keeps the queued jobs"
        worker = WorkerProcess(env, service_dir / "logs").start()
        time.sleep(3)
        redis.restart()  # again, now with the worker connected and the producer waiting on backpressure
        assert producer.wait(timeout=400) == 0, producer.stderr.read().decode()[-2000:]

        def status() -> dict:
            return json.loads(cli(env, "status", "aof", "--json", "--manifest-dir", str(tmp_path / "m")).stdout)

        # no resume: jobs queued across the restarts, and those in flight (redelivered after the visibility
        # timeout), all complete on their own
        def settled() -> bool:
            counts = status()
            return counts["done"] + counts["failed"] == counts["total"]

        try:
            wait_until(settled, 400, "every job to complete or fail", interval=3)
        except TimeoutError:
            raise AssertionError(f"jobs neither stored nor failed: {status()}\n{worker.log()[-4000:]}") from None
        final = status()
        assert final["failed"] == 0, final  # with the reasons of the failures
        assert "Connection to broker lost" in worker.log() and worker.process.poll() is None
    finally:
        if worker:
            worker.stop()
        redis.stop()


def test_job_running_when_redis_goes_down_is_finished_not_cancelled(prepared_random_weights, service_dir, tmp_path,
                                                                    ref_wav_bytes):
    """The window this guards: Redis hands out a message and goes down before it is recorded as unacknowledged, so
    Redis has no copy left. Emptying the unacked hash by hand makes that window certain. Cancelling running jobs on
    connection loss (Celery's optional behaviour) would then lose the job; the worker finishes it instead."""
    from tests.conftest import VOICE_KEY, job, plain_celery

    redis = RedisServer(tmp_path / "window-redis", appendonly=True).start()
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    env = worker_env(redis.url, f"file://{store}", prepared_random_weights, F5_QUEUE="window")
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        text = "Llegó, pues, el día, y el hidalgo, armado de todas sus armas, subió sobre su rocín. " * 4
        result = plain_celery(redis.url).send_task("f5tts.synthesize", queue="window",
                                                   kwargs={"job": job(text, "window/once.wav", nfe_step=64)})
        wait_until(lambda: result.state == "STARTED", 60, "the job to start")
        assert redis.client().delete("unacked", "unacked_index") == 2, "the running job was recorded as unacked"
        redis.restart()
        assert result.get(timeout=180)["key"] == "window/once.wav"
        assert (store / "window" / "once.wav").is_file()
        assert "Terminating it instead" not in worker.log()
        assert worker.process.poll() is None
    finally:
        worker.stop()
        redis.stop()


def test_network_cut_just_after_redis_hands_out_a_job_does_not_lose_it(prepared_random_weights, service_dir, tmp_path,
                                                                       ref_wav_bytes):
    """The other side of that window, hit exactly: Redis pops the message for the worker (BRPOP), and the network
    fails before the worker records it as unacknowledged. Stock kombu raises there and drops the message, which Redis
    no longer holds either. The worker must run it. A real TCP proxy between the worker and Redis makes the cut; Redis
    keeps running, and the client and the result backend reach it directly."""
    from tests.conftest import VOICE_KEY, job, plain_celery

    redis = RedisServer(tmp_path / "cut-redis", appendonly=True).start()
    proxy = CuttableProxy(redis.port).start()
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    env = worker_env(proxy.url, f"file://{store}", prepared_random_weights, F5_QUEUE="cut", RESULT_BACKEND=redis.url)
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        task_id = f"cut-{uuid.uuid4().hex}"
        proxy.cut_after(task_id.encode(), seconds=8)  # longer than redis-py's own reconnect retries
        result = plain_celery(redis.url).send_task("f5tts.synthesize", queue="cut", task_id=task_id,
                                                   kwargs={"job": job("Llegó, pues, el día.", "cut/once.wav")})
        wait_until(lambda: proxy.cuts == 1, 60, "the network cut after the job was handed out")
        assert queued(redis.client(), "cut") == 0 and not redis.client().hlen("unacked"), \
            "Redis holds no copy of the job: only the worker has it"
        assert result.get(timeout=180)["key"] == "cut/once.wav", worker.log()[-3000:]
        assert (store / "cut" / "once.wav").is_file()
        assert worker.process.poll() is None
    finally:
        worker.stop()
        proxy.stop()
        redis.stop()

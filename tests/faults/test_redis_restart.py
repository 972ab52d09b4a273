"""Redis (AOF on, as in production) restarted while jobs are queued and the producer is publishing: every job
completes, and the worker and the producer reconnect on their own."""

from __future__ import annotations

import json
import signal
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


@pytest.mark.parametrize("reply_arrives", [True, False], ids=["reply-arrives", "reply-lost"])
def test_network_cut_just_after_redis_hands_out_a_job_does_not_lose_it(prepared_random_weights, service_dir, tmp_path,
                                                                       ref_wav_bytes, reply_arrives):
    """The other side of that window, hit exactly: Redis hands the message to the worker and the network fails, just
    after the reply reaches the worker or just before. Stock kombu has popped it with BRPOP and not yet recorded it,
    so only the worker could hold it, and with a lost reply nothing does. Here the hand-out and the record are one
    step: a worker that got the message runs it, and one whose reply was lost puts the message back as soon as it
    reconnects (well before the visibility timeout, an hour here). A real TCP proxy between the worker and Redis makes
    the cut; Redis keeps running, and the client and the result backend reach it directly."""
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
        # longer than redis-py's own reconnect retries
        proxy.cut_after(task_id.encode(), seconds=8, forward=reply_arrives)
        result = plain_celery(redis.url).send_task("f5tts.synthesize", queue="cut", task_id=task_id,
                                                   kwargs={"job": job("Llegó, pues, el día.", "cut/once.wav")})
        wait_until(lambda: proxy.cuts == 1, 60, "the network cut after the job was handed out")
        assert queued(redis.client(), "cut") == 0 and redis.client().hlen("unacked") == 1, \
            "Redis handed the job out and recorded it as unacknowledged in the same step"
        assert result.get(timeout=180)["key"] == "cut/once.wav", worker.log()[-3000:]
        assert (store / "cut" / "once.wav").is_file()
        assert worker.process.poll() is None
        if not reply_arrives:
            assert "back in its queue" in worker.log(), "the job came back through its claim"
    finally:
        worker.stop()
        proxy.stop()
        redis.stop()


def test_worker_killed_after_redis_hands_out_a_job_does_not_lose_it(prepared_random_weights, service_dir, tmp_path,
                                                                     ref_wav_bytes):
    """The window the soak found: Redis has handed a message to a worker, and the worker is SIGKILLed before it could
    record it. A proxy holds Redis's reply, so the kill lands exactly there. With kombu's BRPOP the job is gone; here it
    was recorded in the same step, and the visibility-timeout sweep of the next worker brings it back."""
    from tests.conftest import VOICE_KEY, job, plain_celery

    redis = RedisServer(tmp_path / "held-redis", appendonly=True).start()
    proxy = CuttableProxy(redis.port).start()
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    limits = {"VISIBILITY_TIMEOUT": "20", "TASK_TIME_LIMIT": "15", "TASK_SOFT_TIME_LIMIT": "12"}
    env = worker_env(proxy.url, f"file://{store}", prepared_random_weights, F5_QUEUE="held", RESULT_BACKEND=redis.url,
                     **limits)
    worker = WorkerProcess(env, service_dir / "logs").start()
    successor = None
    try:
        task_id = f"held-{uuid.uuid4().hex}"
        proxy.hold(task_id.encode())
        result = plain_celery(redis.url).send_task("f5tts.synthesize", queue="held", task_id=task_id,
                                                   kwargs={"job": job("Llegó, pues, el día.", "held/once.wav")})
        wait_until(lambda: proxy.held == 1, 60, "Redis to hand the job out")
        worker.stop(sig=signal.SIGKILL)
        assert queued(redis.client(), "held") == 0 and redis.client().hlen("unacked") == 1, \
            "the handed-out job is recorded in Redis, not only in the killed worker"
        successor = WorkerProcess(worker_env(redis.url, f"file://{store}", prepared_random_weights, F5_QUEUE="held",
                                             **limits), service_dir / "logs").start()
        assert result.get(timeout=240)["key"] == "held/once.wav", successor.log()[-3000:]
        assert (store / "held" / "once.wav").is_file()
    finally:
        worker.stop()
        if successor is not None:
            successor.stop()
        proxy.stop()
        redis.stop()

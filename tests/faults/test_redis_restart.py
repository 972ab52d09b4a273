"""Redis (AOF on, as in production) restarted while jobs are queued and the producer is publishing: every job
completes, and the worker and the producer reconnect on their own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REF_TEXT, cli, two_chapters, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until

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
        wait_until(lambda: redis.client().llen("restart") >= 30, 60, "jobs to queue up")
        queued_before = redis.client().llen("restart")
        redis.restart()  # SIGTERM: Redis writes its AOF and exits; the same port and folder come back
        assert redis.client().llen("restart") >= queued_before - 1, "AOF keeps the queued jobs"
        worker = WorkerProcess(env, service_dir / "logs").start()
        time.sleep(3)
        redis.restart()  # again, now with the worker connected and the producer waiting on backpressure
        assert producer.wait(timeout=400) == 0, producer.stderr.read().decode()[-2000:]

        def status() -> dict:
            return json.loads(cli(env, "status", "aof", "--json", "--manifest-dir", str(tmp_path / "m")).stdout)

        # no resume: jobs queued across the restarts, and those in flight (redelivered after the visibility
        # timeout), all complete on their own
        wait_until(lambda: status()["done"] == status()["total"], 400, "every job to complete", interval=3)
        assert status()["failed"] == 0
        assert "Connection to broker lost" in worker.log() and worker.process.poll() is None
    finally:
        if worker:
            worker.stop()
        redis.stop()

"""Workers stopped with real signals in the middle of a job: warm shutdown finishes it, a SIGKILL of the whole
worker loses nothing (Redis redelivers after the visibility timeout). Every job completes exactly once in storage."""

from __future__ import annotations

import re
import signal

import pytest

from tests.conftest import BUCKET, PREFIX, job, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(400)

LONG_TEXT = ("Llegó, pues, el día, y el hidalgo, armado de todas sus armas, subió sobre su rocín, embrazó su adarga, "
             "tomó su lanza y por la puerta falsa de un corral salió al campo con grandísimo contento. ") * 2


def _env(redis_server, s3_server, weights, **extra):
    """A worker on a queue of its own (see ``own_queue``): F5_QUEUE in the result names it."""
    return worker_env(redis_server.url, f"s3://{BUCKET}/{PREFIX}", weights, s3_server.endpoint,
                      F5_QUEUE=own_queue("signals"), **extra)


def _keys(s3_server, prefix: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}")
            .get("Contents", [])]


def test_sigterm_mid_job_finishes_the_job_then_stops(redis_server, s3_server, voice_in_s3, prepared_random_weights,
                                                     service_dir):
    env = _env(redis_server, s3_server, prepared_random_weights)
    worker = WorkerProcess(env, service_dir / "logs").start()
    client = plain_celery(redis_server.url)
    result = client.send_task("f5tts.synthesize", kwargs={"job": job(LONG_TEXT, "term/once.wav", nfe_step=32)},
                              queue=env["F5_QUEUE"])
    wait_until(lambda: result.state == "STARTED", 60, "the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=240) == 0
    assert result.get(timeout=10)["key"] == "term/once.wav"
    assert _keys(s3_server, "term/") == [f"{PREFIX}/term/once.wav"]
    assert len(re.findall(rf"{result.id}\] succeeded", worker.log())) == 1
    worker.stop()


def test_whole_worker_sigkilled_mid_job_is_redelivered(redis_server, s3_server, voice_in_s3, prepared_random_weights,
                                                       service_dir):
    env = _env(redis_server, s3_server, prepared_random_weights, VISIBILITY_TIMEOUT="12", TASK_TIME_LIMIT="10",
               TASK_SOFT_TIME_LIMIT="9")
    first = WorkerProcess(env, service_dir / "logs").start()
    client = plain_celery(redis_server.url)
    result = client.send_task("f5tts.synthesize", kwargs={"job": job(LONG_TEXT, "killall/once.wav", nfe_step=8)},
                              queue=env["F5_QUEUE"])
    wait_until(lambda: result.state == "STARTED", 60, "the job to start")
    first.stop(signal.SIGKILL)  # parent and pool at once: nobody acknowledges, nobody requeues
    assert _keys(s3_server, "killall/") == []
    second = WorkerProcess(env, service_dir / "logs").start()
    try:
        assert result.get(timeout=240)["key"] == "killall/once.wav"
    finally:
        second.stop()
    assert _keys(s3_server, "killall/") == [f"{PREFIX}/killall/once.wav"]

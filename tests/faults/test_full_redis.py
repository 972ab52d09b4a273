"""A Redis at ``maxmemory`` with ``noeviction`` (what production runs) refusing the publish of a job's retry.

Celery rejects the message without requeueing it when ``retry()`` cannot publish, so the job used to be acknowledged
away, with no dead letter. Real parts: a private redis-server made full with real writes, a real worker, and an S3
endpoint that hangs (a real socket that accepts and never answers), so the job's skip check fails with a transient
error while Redis is full; then Redis gets room, a real moto S3 server takes the endpoint's port, and the job must
complete.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from tests.conftest import VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import RedisServer, S3Server, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(500)


class HangingEndpoint:
    """Accepts TCP connections on a port and never answers: an S3 endpoint that hangs."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                self.held.append(connection)

    def close(self) -> None:
        # shutdown() first: on Linux a plain close() leaves a listener that a thread blocks in accept() on still
        # accepting connections, so the S3 server meant to take the port next could not bind it
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.accepting.join(10)
        for connection in self.held:
            connection.close()


def _fill(client) -> int:
    """Make Redis full: some filler, then ``maxmemory`` below what it uses, so that under ``noeviction`` it refuses
    every write that needs memory (as a production Redis does once it reaches its limit)."""
    written = 16
    for index in range(written):
        client.set(f"filler:{index}", b"x" * 65536)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 512 * 1024)
    with pytest.raises(Exception, match="maxmemory"):
        client.lpush("probe", b"x")
    return written


def _free(client, written: int) -> None:
    for start in range(0, written, 500):
        client.delete(*[f"filler:{i}" for i in range(start, min(written, start + 500))])
    client.config_set("maxmemory", 0)


def test_a_retry_that_a_full_redis_refuses_is_not_lost(prepared_random_weights, service_dir, tmp_path,
                                                        ref_wav_bytes):
    redis = RedisServer(service_dir / "redis-full").start()
    hanging = HangingEndpoint()
    s3 = None
    voices = tmp_path / "voices-dir"
    (voices / "voices").mkdir(parents=True)
    (voices / VOICE_KEY).write_bytes(ref_wav_bytes)
    queue = own_queue("fullredis")
    env = worker_env(redis.url, "s3://full/p", prepared_random_weights, f"http://127.0.0.1:{hanging.port}",
                     F5_QUEUE=queue, F5_VOICES_DIR=str(voices), S3_CONNECT_TIMEOUT="1", S3_READ_TIMEOUT="3",
                     VISIBILITY_TIMEOUT="40", TASK_TIME_LIMIT="30", TASK_SOFT_TIME_LIMIT="25")
    worker = WorkerProcess(env, service_dir / "logs").start()
    client = redis.client()
    try:
        result = plain_celery(redis.url).send_task(
            "f5tts.synthesize", queue=queue, kwargs={"job": {**job("Una frase que espera sitio.", "full/one.wav"),
                                                             "job_id": "full-one"}})
        wait_until(lambda: f"[{result.id}] received" in worker.log(), 60, "the worker to take the job")
        written = _fill(client)  # the skip check's HEAD hangs meanwhile; its failure asks for a retry
        assert written > 0
        wait_until(lambda: "could not be published" in worker.log() and "goes back to its queue instead" in
                   worker.log(), 120, "the retry to be refused by the full Redis, every time")
        _free(client, written)
        hanging.close()
        s3 = S3Server(service_dir / "s3-after-full")
        s3.port = hanging.port  # a real S3 endpoint where the hanging one was
        s3.start()
        s3.client().create_bucket(Bucket="full")
        assert result.get(timeout=240)["key"] == "full/one.wav"
        assert [o["Key"] for o in s3.client().list_objects_v2(Bucket="full")["Contents"]] == ["p/full/one.wav"]
    finally:
        worker.stop()
        if s3 is not None:
            s3.stop()
        hanging.close()
        redis.stop()


def test_a_result_that_a_full_redis_refuses_arrives_once_it_has_room(prepared_random_weights, service_dir, tmp_path,
                                                                      ref_wav_bytes):
    """The job's audio is stored, then Redis refuses its result for memory: the worker (started the documented way,
    RESULT_BACKEND in its environment, which Celery's command line copies over the configured backend) keeps trying,
    and the result arrives once Redis has room. Celery's own Redis backend raises at once, and the result is lost."""
    redis = RedisServer(service_dir / "redis-full-result").start()
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    queue = own_queue("fullresult")
    worker = WorkerProcess(worker_env(redis.url, f"file://{store}", prepared_random_weights, F5_QUEUE=queue),
                           service_dir / "logs").start()
    client = redis.client()
    try:
        text = " ".join(["Una frase larga que tarda en decirse, y que el modelo dice despacio."] * 4)
        result = plain_celery(redis.url).send_task(
            "f5tts.synthesize", queue=queue, kwargs={"job": {**job(text, "full/result.wav", nfe_step=32),
                                                             "job_id": "full-result"}})
        wait_until(lambda: f"[{result.id}] received" in worker.log(), 60, "the worker to take the job", interval=0.02)
        written = _fill(client)  # while the job is still inferring
        assert not (store / "full/result.wav").exists(), "the job ended before Redis was full; the test needs longer"
        wait_until(lambda: (store / "full/result.wav").exists(), 120, "the job's audio to be stored")
        time.sleep(1.5)  # its result is refused meanwhile
        _free(client, written)
        assert result.get(timeout=60)["key"] == "full/result.wav"
    finally:
        worker.stop()
        redis.stop()

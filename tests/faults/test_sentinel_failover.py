"""Broker failover with Redis Sentinel: a master, a replica and three sentinels on loopback. The master is SIGKILLed
while a 200-segment book flows; a sentinel promotes the replica. Every segment ends in storage: the worker and the
producer reconnect by themselves, and the producer's --wait sends again the segments whose messages the failover lost
(Redis replicates asynchronously, so the last moments before the kill may exist on no server)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REF_TEXT, cli, two_chapters, worker_env
from tests.services import RedisServer, SentinelServer, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def sentinel_redis(tmp_path):
    master = RedisServer(tmp_path / "master", appendonly=True).start()
    replica = RedisServer(tmp_path / "replica", appendonly=True)
    replica.start_args = ["--replicaof", "127.0.0.1", str(master.port)]
    replica.start()
    wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 30, "replication")
    sentinels = [SentinelServer(tmp_path / f"sentinel-{i}", master.port).start() for i in range(3)]
    wait_until(lambda: all(s.knows(replicas=1, sentinels=2) for s in sentinels), 60, "the sentinels to find everyone")
    url = ";".join(f"sentinel://127.0.0.1:{s.port}" for s in sentinels) + "/0"
    yield master, replica, sentinels, url
    for server in [*sentinels, replica, master]:
        server.stop()


def test_master_killed_while_a_book_flows_every_segment_is_stored(sentinel_redis, prepared_random_weights,
                                                                  service_dir, tmp_path, quijote_path, ref_wav_path):
    master, replica, sentinels, url = sentinel_redis
    store = tmp_path / "store"
    env = worker_env(url, f"file://{store}", prepared_random_weights, F5_QUEUE="ha", F5_SENTINEL_MASTER="f5master",
                     F5_PROGRESS_INTERVAL="2", F5_RESEND_AFTER="8")
    assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    worker = WorkerProcess(env, service_dir / "logs", concurrency=16).start()
    producer = None
    try:
        corpus = two_chapters(quijote_path, tmp_path)
        command = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(corpus), "--book", "ha",
                   "--voice", "narrador", "--batch-size", "1", "--nfe-step", "2", "--max-queued", "60",
                   "--manifest-dir", str(tmp_path / "m"), "--wait"]
        log = tmp_path / "producer.log"
        with log.open("wb") as out:
            producer = subprocess.Popen(command, env=env, stdout=out, stderr=out)
            segments = store / "books" / "ha"
            wait_until(lambda: len(list(segments.rglob("*.wav"))) >= 30, 180, "a part of the book to be stored")
            master.process.send_signal(signal.SIGKILL)  # the broker's host is gone
            wait_until(lambda: sentinels[0].master_address()[1] == replica.port, 60, "the replica's promotion")
            assert producer.wait(timeout=400) == 0, log.read_text()[-3000:]
        entries = [json.loads(line) for line in (tmp_path / "m" / "ha.jsonl").read_text().splitlines()]
        assert len(entries) >= 150
        stored = sorted(p.relative_to(store).as_posix() for p in segments.rglob("*.wav"))
        assert stored == sorted(e["key"] for e in entries)
        assert worker.process.poll() is None, "the worker reconnected instead of exiting"
        assert "all" in log.read_text() and "segments rendered" in log.read_text()
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
        worker.stop()

"""Enqueueing against a real Redis with nobody consuming the queue: the manifest is in reading order whatever the
batching, a blocked producer says why it waits (also when its output is not a terminal), and an interrupted enqueue
leaves a manifest from which ``resume`` continues."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from producer.corpus import body_paragraphs
from tests.conftest import REF_TEXT, cli, own_queue, worker_env
from tests.services import queue_keys, queued, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def env(redis_server, prepared_random_weights, tmp_path, ref_wav_path):
    env = worker_env(redis_server.url, f"file://{tmp_path / 'store'}", prepared_random_weights,
                     F5_QUEUE=own_queue("nobody"))
    added = cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT)
    assert added.returncode == 0, added.stderr
    yield env
    import redis

    redis.Redis.from_url(env["BROKER_URL"]).delete(*queue_keys(env["F5_QUEUE"]))


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_whole_book_in_reading_order(entries: list[dict], corpus: Path) -> None:
    positions = [(e["chapter"], e["index"]) for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert "".join(e["text"] for e in entries) == "".join(p.raw for p in body_paragraphs(corpus, "utf-8"))


def test_a_batched_book_has_its_manifest_in_reading_order(env, quijote_path, tmp_path):
    done = cli(env, "enqueue", str(quijote_path), "--book", "order", "--voice", "narrador", "--batch-size", "8",
               "--max-queued", "100000", "--manifest-dir", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr[-2000:]
    entries = _manifest(tmp_path / "m" / "order.jsonl")
    assert {e["task"] for e in entries} == {"f5tts.synthesize_batch"}
    by_task: dict[str, list[int]] = {}
    for position, entry in enumerate(entries):
        by_task.setdefault(entry["task_id"], []).append(position)
    assert any(max(p) - min(p) >= len(p) for p in by_task.values()), "batches group segments out of reading order"
    _assert_whole_book_in_reading_order(entries, quijote_path)


def test_a_blocked_producer_says_why_then_ctrl_c_and_resume_continue(env, quijote_path, tmp_path, redis_server):
    queue, manifests = env["F5_QUEUE"], tmp_path / "m"
    command = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(quijote_path), "--book", "blocked",
               "--voice", "narrador", "--batch-size", "1", "--max-queued", "5", "--manifest-dir", str(manifests)]
    log = tmp_path / "producer.log"
    with log.open("wb") as out:  # a file, not a terminal: progress must come as plain lines
        producer = subprocess.Popen(command, env={**env, "F5_PROGRESS_INTERVAL": "1"}, stdout=out, stderr=out)
        try:
            wait_until(lambda: log.read_text().count("waiting for room") >= 5, 40, "notices once an interval")
            # the producer's own timestamps (whole seconds): a notice every interval of 1 s, not one per minute
            stamps = [datetime.strptime(line[:8], "%H:%M:%S") for line in log.read_text().splitlines()
                      if "waiting for room" in line]
            gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(stamps))
            assert gaps[len(gaps) // 2] <= 1.0 + 1.0  # the median gap: the interval, and the display's rounding
            wait_until(lambda: f"no worker is consuming `{queue}`?" in log.read_text(), 10, "the hint")
            text = log.read_text()
            assert f"queue '{queue}' holds 5 jobs" in text and "--max-queued 5" in text
            producer.send_signal(signal.SIGINT)
            assert producer.wait(30) == 130
        finally:
            producer.kill()
    assert "`f5-batch resume blocked` continues" in log.read_text()
    partial = _manifest(manifests / "blocked.jsonl.partial")
    assert len(partial) >= 5 and not (manifests / "blocked.jsonl").exists()
    assert json.loads((manifests / "blocked.book.json").read_text())["complete"] is False

    resumed = cli(env, "resume", "blocked", "--max-queued", "100000", "--manifest-dir", str(manifests))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing it from" in resumed.stderr
    entries = _manifest(manifests / "blocked.jsonl")
    assert entries[: len(partial)] == partial
    _assert_whole_book_in_reading_order(entries, quijote_path)
    # each segment was sent exactly once, by the interrupted run or by resume: counted by messages
    assert queued(redis_server.client(), queue) == len(entries)
    assert json.loads((manifests / "blocked.book.json").read_text())["complete"] is True


def test_sigterm_interrupts_like_ctrl_c(env, quijote_path, tmp_path):
    command = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(quijote_path), "--book", "term",
               "--voice", "narrador", "--batch-size", "1", "--max-queued", "3", "--manifest-dir", str(tmp_path / "m")]
    producer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = tmp_path / "m" / "term.jsonl.partial"
    wait_until(lambda: partial.exists() and len(partial.read_text().splitlines()) >= 3, 30, "three published")
    producer.send_signal(signal.SIGTERM)
    assert producer.wait(30) == 130
    assert "f5-batch resume term" in producer.stderr.read().decode()


def test_the_no_consumer_hint_comes_only_when_nothing_is_taken():
    """A queue held at --max-queued by a producer that refills it as fast as a worker drains it is consumed: its
    length never goes down between notices, but the published count goes up. Only a queue from which nothing is
    taken earns the hint."""
    from producer.enqueue import BlockedWatch

    now = [0.0]
    watch = BlockedWatch("f5tts", 60, hint_after_s=30, clock=lambda: now[0])
    for step in range(20):  # drained and refilled: 60 waiting at every notice, 5 more published each time
        now[0] = 2.0 * step
        assert "no worker" not in watch.message(60, 100 + 5 * step)
    for _ in range(20):  # then nothing moves
        now[0] += 2.0
        text = watch.message(60, 195)
    assert "queue 'f5tts' holds 60 jobs" in text and "no worker is consuming `f5tts`?" in text

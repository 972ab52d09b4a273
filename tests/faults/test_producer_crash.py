"""The producer killed halfway through a book's enqueue: running enqueue again finishes it, and the book ends with
every segment stored exactly once."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REF_TEXT, cli, two_chapters, worker_env
from tests.services import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(600)


def test_producer_sigkilled_halfway_then_enqueue_again(redis_server, prepared_random_weights, service_dir, tmp_path,
                                                       quijote_path, ref_wav_path):
    env = worker_env(redis_server.url, f"file://{tmp_path / 'store'}", prepared_random_weights, F5_QUEUE="crashq")
    assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    corpus = two_chapters(quijote_path, tmp_path, until="Capítulo II.")  # chapter I: about 60 segments
    manifests = tmp_path / "m"
    args = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(corpus), "--book", "halfway", "--voice",
            "narrador", "--batch-size", "1", "--nfe-step", "2", "--max-queued", "30", "--manifest-dir",
            str(manifests)]
    producer = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    partial = manifests / "halfway.jsonl.partial"
    # no worker yet: backpressure holds the producer at 30 queued jobs, about halfway through the book
    wait_until(lambda: partial.exists() and len(partial.read_text().splitlines()) >= 30, 60, "a partial manifest")
    import os

    os.killpg(producer.pid, signal.SIGKILL)  # the CLI and its publisher process
    producer.wait(10)
    published = len(partial.read_text().splitlines())
    assert not (manifests / "halfway.jsonl").exists()
    worker = WorkerProcess(env, service_dir / "logs", concurrency=2).start()
    try:
        again = cli(env, *args[1:], "--wait", timeout=500)
        assert again.returncode == 0, again.stderr[-2000:]
        # what the first run published is found waiting (or held by the worker, or stored) and not sent again
        not_sent = re.search(r"(\d+) not sent", again.stderr.replace("\n", " "))
        assert not_sent and int(not_sent.group(1)) >= published, again.stderr[-2000:]
    finally:
        worker.stop()
    entries = [json.loads(line) for line in (manifests / "halfway.jsonl").read_text().splitlines()]
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids))
    store = tmp_path / "store"
    stored = sorted(p.relative_to(store).as_posix() for p in (store / "books" / "halfway").rglob("*.wav"))
    assert stored == sorted(e["key"] for e in entries)

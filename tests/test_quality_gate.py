"""The quality gate end to end: a book enqueued with its gate on, real synthesis and QA workers, pocketsphinx (its
wheel ships an English model, so it runs here with no download), a real S3 endpoint whose request log counts every
write, and a QA worker SIGKILLed mid-way.

The tiny random model speaks noise: every take fails (noise, loudness, nothing recognised), so every segment is
rendered exactly ``max_attempts`` times and ends ``needs_review`` with its best take kept. That is the behaviour under
test, whatever the model.
"""

from __future__ import annotations

import json
import re
import signal
from collections import Counter

import pytest

from tests.conftest import REF_TEXT, cli, own_queue, worker_env
from tests.services import S3Server, WorkerProcess, wait_until

# Its own name: quality records live in the session's Redis by book and segment key, and the review page test's
# book (tests/test_review_page.py) speaks the same sentences, so the same name would share its records.
BOOK = "gate-mice"

pytestmark = pytest.mark.timeout(600)

BOOK_TEXT = """The town mouse came to see him.

They sat down to a dinner of roots.

The larder was full of figs.
"""
ATTEMPTS = 2


def _puts(log: str, bucket: str) -> Counter:
    return Counter(re.findall(rf'"PUT /{bucket}/(\S+\.wav) HTTP/1\.1" 200', log))


def _status(env, book: str, manifests) -> dict:
    done = cli(env, "status", book, "--json", "--manifest-dir", str(manifests))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_noisy_book_gets_n_takes_per_segment_ends_needs_review_and_a_killed_qa_worker_changes_nothing(
        redis_server, prepared_random_weights, service_dir, tmp_path, ref_wav_path):
    s3 = S3Server(service_dir / "s3-quality").start()
    bucket = s3.create_bucket("quality")
    env = worker_env(redis_server.url, f"s3://{bucket}/p", prepared_random_weights, s3.endpoint,
                     F5_QUEUE=own_queue("gate"), F5_QA_QUEUE=own_queue("gate-qa"), F5_QA_MODE="asr",
                     F5_QA_ASR="pocketsphinx", F5_QA_MAX_ATTEMPTS=str(ATTEMPTS),
                     # the killed QA worker's checks come back through the visibility-timeout sweep: a short one
                     VISIBILITY_TIMEOUT="20", TASK_TIME_LIMIT="15", TASK_SOFT_TIME_LIMIT="12")
    assert cli(env, "voice", "add", "narrator", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    corpus = tmp_path / "mice.txt"
    corpus.write_text(BOOK_TEXT)
    manifests = tmp_path / "m"
    synthesis = WorkerProcess(env, service_dir / "logs", concurrency=4).start()
    qa_env = {**env, "F5_WORKER_ROLE": "qa"}
    qa = WorkerProcess(qa_env, service_dir / "logs", concurrency=2).start()
    try:
        done = cli(env, "enqueue", str(corpus), "--book", BOOK, "--voice", "narrator", "--lang", "en",
                   "--batch-size", "1", "--nfe-step", "2", "--manifest-dir", str(manifests))
        assert done.returncode == 0, done.stderr
        total = len((manifests / f"{BOOK}.jsonl").read_text().splitlines())
        assert total == 3
        # the QA worker is killed once, mid-way through the checks, and started again
        wait_until(lambda: qa.log().count("f5tts.qa_check[") >= 2, 240, "a first check")
        qa.stop(signal.SIGKILL)
        qa = WorkerProcess(qa_env, service_dir / "logs", concurrency=2).start()
        try:
            wait_until(lambda: _status(env, BOOK, manifests)["qa"]["needs_review"] == total, 400,
                       "every segment to end needs_review")
        except TimeoutError as exc:  # say where things stand
            client = redis_server.client()
            waiting = {k.decode(): client.llen(k) for k in client.keys(f"{env['F5_QUEUE']}*")
                       if client.type(k) == b"list"}
            records = [json.loads(client.get(k))["state"] for k in client.keys(f"f5tts:qa:{BOOK}:books*")]
            raise AssertionError(f"{exc}; queued {waiting}, unacked {client.hlen('unacked')}, states {records}, "
                                 f"status {_status(env, BOOK, manifests)}") from None
    finally:
        qa.stop()
        synthesis.stop()
    review = json.loads(cli(env, "review", BOOK, "--json", "--manifest-dir", str(manifests)).stdout)
    assert review["counts"]["needs_review"] == total and len(review["flagged"]) == total
    puts = _puts((service_dir / "s3-quality" / f"moto-{s3.port}.log").read_text(errors="replace"), bucket)
    # a person listened to the first flagged segment and keeps it: it leaves the review list, with no new take
    first = review["flagged"][0]["id"]
    accepted = cli(env, "accept", BOOK, first, "--manifest-dir", str(manifests))
    assert accepted.returncode == 0, accepted.stderr
    assert _status(env, BOOK, manifests)["qa"] == {**review["counts"], "needs_review": total - 1, "accepted": 1}
    refused = cli(env, "accept", BOOK, "no-such-segment", "--manifest-dir", str(manifests))
    assert refused.returncode != 0 and "no segment 'no-such-segment'" in refused.stderr
    s3.stop()
    for item in review["flagged"]:
        assert [a["attempt"] for a in item["attempts"]] == list(range(1, ATTEMPTS + 1)), item["id"]
        assert len({a["seed"] for a in item["attempts"]}) == ATTEMPTS, "each take has its own seed"
        assert not any(a["passed"] for a in item["attempts"])
        assert all(a["reasons"] for a in item["attempts"])
        key = item["key"]
        stem = key.removesuffix(".wav")
        # counted by storage writes: each take rendered once, and the kept take copied to the key if it was not
        # the first
        assert all(puts[f"p/{stem}.take{n}.wav"] == 1 for n in range(2, ATTEMPTS + 1)), (key, puts)
        assert puts[f"p/{key}"] == 1 + (item["best"] != 1), (key, item["best"], puts[f"p/{key}"])

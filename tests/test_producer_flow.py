"""The producer against real services: enqueue, status, backpressure, crash and resume, unreachable broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REF_TEXT, cli, two_chapters, worker_env
from tests.services import WorkerProcess, pop_one, queue_keys, queued, wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def local_env(redis_server, prepared_random_weights, tmp_path, ref_wav_path):
    """Environment for the CLI and a worker sharing a local storage folder and a queue of their own."""
    queue = f"q{time.monotonic_ns()}"
    env = worker_env(redis_server.url, f"file://{tmp_path / 'store'}", prepared_random_weights, F5_QUEUE=queue,
                     F5_BROKER_RENEW_S="1")  # a killed worker's messages are known dead after 3 s
    done = cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT)
    assert done.returncode == 0, done.stderr
    return env


def _manifest(folder: Path, book: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{book}.jsonl").read_text().splitlines()]


def _stored(env: dict[str, str], book: str) -> list[str]:
    """Segment WAVs of a book (chapter files that other tests assemble from the same store are not segments)."""
    root = Path(env["STORAGE_URL"].removeprefix("file://"))
    return sorted(p.relative_to(root).as_posix() for p in (root / "books" / book).glob("[0-9]*/*.wav"))


def test_two_runs_give_identical_manifests_and_the_second_sends_nothing(local_env, quijote_path, tmp_path,
                                                                        redis_server):
    corpus = two_chapters(quijote_path, tmp_path)
    runs = []
    for folder in ("first", "second"):
        done = cli(local_env, "enqueue", str(corpus), "--book", "same", "--voice", "narrador", "--manifest-dir",
                   str(tmp_path / folder))
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout + done.stderr)

    def without_task_ids(folder: str) -> list[dict]:  # every send gets a fresh task id
        return [{k: v for k, v in line.items() if k != "task_id"} for line in _manifest(tmp_path / folder, "same")]

    assert without_task_ids("first") == without_task_ids("second")
    assert " 0 messages published" in runs[1], runs[1]  # every segment is still on its way: nothing sent twice
    messages = queued(redis_server.client(), local_env["F5_QUEUE"])
    assert 0 < messages == len({line["task_id"] for line in _manifest(tmp_path / "first", "same")})


def test_worker_killed_halfway_then_resume_completes_without_duplicates(local_env, quijote_path, tmp_path,
                                                                        service_dir):
    corpus = two_chapters(quijote_path, tmp_path, until="Capítulo II.")  # chapter I: about 60 segments
    manifests = str(tmp_path / "m")
    done = cli(local_env, "enqueue", str(corpus), "--book", "crash", "--voice", "narrador", "--batch-size", "1",
               "--nfe-step", "2", "--manifest-dir", manifests)
    assert done.returncode == 0, done.stderr
    total = len(_manifest(tmp_path / "m", "crash"))
    worker = WorkerProcess(local_env, service_dir / "logs", concurrency=1).start()
    wait_until(lambda: len(_stored(local_env, "crash")) >= total // 3, 300, "a third of the book")
    worker.stop(signal.SIGKILL)  # the whole worker, parent and pool, at once
    partial = len(_stored(local_env, "crash"))
    assert 0 < partial < total
    status = json.loads(cli(local_env, "status", "crash", "--json", "--manifest-dir", manifests).stdout)
    assert status["done"] == partial and status["done"] + status["queued"] + status["running"] == total
    # the queue is lost (as after a broker flush): resume must re-send whatever is missing
    import redis

    redis.Redis.from_url(local_env["BROKER_URL"]).delete(*queue_keys(local_env["F5_QUEUE"]))
    worker = WorkerProcess(local_env, service_dir / "logs", concurrency=2).start()
    try:
        resumed = cli(local_env, "resume", "crash", "--manifest-dir", manifests, "--wait", timeout=500)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        again = cli(local_env, "resume", "crash", "--manifest-dir", manifests)
        assert "0 re-enqueued" in again.stderr
    finally:
        worker.stop()
    stored = _stored(local_env, "crash")
    assert len(stored) == len(set(stored)) == total
    assert stored == sorted(e["key"] for e in _manifest(tmp_path / "m", "crash"))


def test_backpressure_keeps_the_queue_under_max_queued(local_env, quijote_path, tmp_path, redis_server):
    corpus = two_chapters(quijote_path, tmp_path)
    queue = local_env["F5_QUEUE"]
    command = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(corpus), "--book", "bp", "--voice",
               "narrador", "--batch-size", "1", "--max-queued", "25", "--manifest-dir", str(tmp_path / "m")]
    process = subprocess.Popen(command, env=local_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = redis_server.client()
    highest = consumed = 0
    while process.poll() is None:
        highest = max(highest, queued(client, queue))
        for _ in range(4):  # a slow consumer
            consumed += pop_one(client, queue) is not None
        time.sleep(0.05)
    assert process.returncode == 0, process.stderr.read().decode()[-2000:]
    remaining = queued(client, queue)
    assert highest <= 25 and consumed + remaining == len(_manifest(tmp_path / "m", "bp"))
    client.delete(*queue_keys(queue))


def test_unreachable_broker_is_a_clear_error_and_writes_nothing(local_env, quijote_path, tmp_path):
    from tests.services import free_port

    env = {**local_env, "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = cli(env, "enqueue", str(two_chapters(quijote_path, tmp_path)), "--book", "nobroker", "--voice", "narrador",
               "--manifest-dir", str(tmp_path / "m"), timeout=120)
    assert done.returncode != 0
    assert "cannot reach the broker" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("make", "needle"), [
    (lambda d: d / "missing.txt", "no such file"),
    (lambda d: (d / "x.docx").write_bytes(b"PK") and d / "x.docx", "unsupported file type"),
    (lambda d: (d / "e.txt").write_bytes(b"") or d / "e.txt", "no text to speak"),
])
def test_bad_corpus_files_are_clear_errors(local_env, tmp_path, make, needle):
    done = cli(local_env, "enqueue", str(make(tmp_path)), "--book", "bad", "--voice", "narrador", "--manifest-dir",
               str(tmp_path / "m"))
    assert done.returncode != 0 and needle in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m" / "bad.jsonl").exists()


def test_cli_never_imports_torch(local_env, quijote_path, tmp_path):
    code = ("import sys\nfrom producer.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'f5_tts', 'torchaudio')]\n"
            "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code, "enqueue", str(two_chapters(quijote_path, tmp_path)), "--book",
                           "slim", "--voice", "narrador", "--manifest-dir", str(tmp_path / "m")],
                          env=local_env, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stderr[-2000:]

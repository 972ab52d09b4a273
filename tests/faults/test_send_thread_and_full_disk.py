"""Faults found in the third round of reliability work, each with real processes:

- an exception while the engine process's send thread finishes a job's audio (a CUDA out-of-memory in the cross-fade
  on a GPU). No CPU runs out of device memory on demand, so a test-only fault hook for the send thread
  (``F5_TEST_FAULTS=finish-oom-once:PATH``, see ``worker.engine.faults``) raises the error such a cross-fade raises,
  once; everything after the raise is the real handling;
- a full filesystem under local storage: a real tmpfs of 1 MiB, filled, then emptied.
"""

from __future__ import annotations

import contextlib
import subprocess

import pytest

from tests.conftest import VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, letters_by_job_id, wait_until

pytestmark = pytest.mark.timeout(400)


def test_a_failure_finishing_one_jobs_audio_fails_that_job_alone_and_the_engine_keeps_serving(
        redis_server, prepared_random_weights, service_dir, tmp_path, ref_wav_bytes):
    store = tmp_path / "store"
    (store / "voices").mkdir(parents=True)
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    marker = tmp_path / "fail-the-next-finish"
    queue = own_queue("finishfault")
    env = worker_env(redis_server.url, f"file://{store}", prepared_random_weights, F5_QUEUE=queue,
                     F5_TEST_FAULTS=f"finish-oom-once:{marker}")
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        client = plain_celery(redis_server.url)
        engine = worker.children()[0].pid
        marker.touch()  # the send thread's next finish raises "CUDA out of memory"
        first = client.send_task("f5tts.synthesize", queue=queue, kwargs={"job": {
            **job("La primera frase tropieza al terminar.", "finish/first.wav"), "job_id": "finish-first"}})
        assert first.get(timeout=120)["key"] == "finish/first.wav"  # retried, then stored
        assert not marker.exists(), "the fault hook did not fire"
        after = [client.send_task("f5tts.synthesize", queue=queue, kwargs={"job": job(f"Y después, la {i}.",
                                                                                        f"finish/after-{i}.wav")})
                 for i in range(3)]
        assert sorted(r.get(timeout=120)["key"] for r in after) == [f"finish/after-{i}.wav" for i in range(3)]
        log = worker.log()
        assert "finishing the audio of a job failed; it is retried" in log
        assert worker.children()[0].pid == engine, "the engine process was not replaced: it went on serving"
        assert "finish-first" not in letters_by_job_id(redis_server.client())
    finally:
        worker.stop()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root or CAP_SYS_ADMIN, as on the CI machine)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder) -> None:
    with open(folder / "filler", "wb") as handle, contextlib.suppress(OSError):  # ENOSPC ends it
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def test_a_full_disk_is_retried_until_there_is_room_and_a_batch_keeps_its_jobs(
        redis_server, prepared_random_weights, service_dir, tmp_path, tiny_disk, ref_wav_bytes):
    voices = tmp_path / "voices-dir"
    (voices / "voices").mkdir(parents=True)
    (voices / VOICE_KEY).write_bytes(ref_wav_bytes)  # the clip lives elsewhere; the small disk takes the outputs
    queue = own_queue("enospc")
    env = worker_env(redis_server.url, f"file://{tiny_disk}", prepared_random_weights, F5_QUEUE=queue,
                     F5_VOICES_DIR=str(voices))
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        _fill(tiny_disk)
        client = plain_celery(redis_server.url)
        batch = client.send_task("f5tts.synthesize_batch", queue=queue, kwargs={"jobs": [
            {**job(f"Frase {i} para un disco lleno.", f"full/{i}.wav", nfe_step=2), "job_id": f"full-{i}"}
            for i in range(4)]})
        wait_until(lambda: worker.log().count("ENOSPC") >= 2, 120, "writes refused for want of space, retried")
        assert batch.state in ("RETRY", "PENDING", "STARTED")
        (tiny_disk / "filler").unlink()
        items = batch.get(timeout=240)
        assert [item["result"]["key"] for item in items] == [f"full/{i}.wav" for i in range(4)]
        assert sorted(p.name for p in (tiny_disk / "full").iterdir()) == [f"{i}.wav" for i in range(4)]
        assert not {f"full-{i}" for i in range(4)} & set(letters_by_job_id(redis_server.client()))
    finally:
        worker.stop()

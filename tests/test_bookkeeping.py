"""The holes of the storage and bookkeeping layer, each closed: dead letters expire, a crash between a local write's
data and its metadata never pairs new metadata with old audio, a key a real S3 refuses is bad input, and the skip
check keys on what determines the audio rather than on a model's name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import REF_TEXT, REPO
from worker.constants import FAILED_JOBS_INDEX_KEY, FAILED_JOBS_KEY, META_JOB_HASH
from worker.contract import Job
from worker.errors import BadInputError
from worker.runtime.deadletter import DeadLetter, DeadLetters
from worker.storage.local import LocalStorage
from worker.storage.s3 import S3Storage


def _letter(job_id: str, at: float) -> DeadLetter:
    return DeadLetter(identity=f"id-{job_id}", job_id=job_id, key=None, task_id=None, task="f5tts.synthesize",
                      code="bad_text", message="x", field="text", retries=0, at=at)


def test_dead_letters_expire_under_noeviction(redis_server):
    client = redis_server.client()
    client.delete(FAILED_JOBS_KEY, FAILED_JOBS_INDEX_KEY)
    letters = DeadLetters(redis_server.url)
    letters.ttl_s = 3600
    letters.record([_letter("old-1", time.time() - 7200), _letter("old-2", time.time() - 3601)])
    letters.record([_letter("fresh", time.time())])
    assert set(letters.all()) == {"id-fresh"}  # the stale ones were dropped by the next write
    assert 0 < client.ttl(FAILED_JOBS_KEY) <= 3600 and 0 < client.ttl(FAILED_JOBS_INDEX_KEY) <= 3600
    client.delete(FAILED_JOBS_KEY, FAILED_JOBS_INDEX_KEY)


CRASH_BETWEEN_DATA_AND_METADATA = """
import os, signal, sys
import worker.storage.local as local
write = local._atomic_write
def crash_before_metadata(path, data, **options):
    if local.META_DIR in str(path):
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies between the audio and its metadata
    write(path, data, **options)
local._atomic_write = crash_before_metadata
local.LocalStorage(local.Path(sys.argv[1])).put("a/b.wav", b"NEW AUDIO", {"f5-job-hash": "new"})
"""


def test_a_crash_between_a_local_writes_data_and_metadata_never_leaves_new_metadata_on_old_audio(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("a/b.wav", b"OLD AUDIO", {META_JOB_HASH: "old"})
    done = subprocess.run([sys.executable, "-c", CRASH_BETWEEN_DATA_AND_METADATA, str(tmp_path)], cwd=REPO,
                          capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    info = storage.head("a/b.wav")
    assert storage.get("a/b.wav") == b"NEW AUDIO"
    assert info.metadata == {}  # no job hash: the skip check treats it as absent, so the job runs again


CRASH_WHILE_FLUSHING = """
import os, signal, sys
import worker.storage.local as local
local.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # the machine goes down while the audio is flushed
storage = local.LocalStorage(local.Path(sys.argv[1]))
storage.put("a/b.wav", b"NEW AUDIO", {"f5-job-hash": "new"}, settle_later=True)
storage.settle()
"""


def test_audio_flushed_after_its_result_gets_its_metadata_only_once_it_is_on_disk(tmp_path):
    """A job's audio is written with ``settle_later``: in place at once, flushed and given its metadata a moment
    later. A crash during the flush leaves it without metadata, which the skip check treats as absent."""
    storage = LocalStorage(tmp_path)
    storage.put("a/b.wav", b"OLD AUDIO", {META_JOB_HASH: "old"})
    done = subprocess.run([sys.executable, "-c", CRASH_WHILE_FLUSHING, str(tmp_path)], cwd=REPO,
                          capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert storage.get("a/b.wav") == b"NEW AUDIO"
    assert storage.head("a/b.wav").metadata == {}


def test_readers_in_the_writing_process_see_audio_whole_while_its_flush_is_slow(tmp_path, monkeypatch):
    """A disk slow to flush (held here by an event): the data is readable at once; ``head`` waits for its metadata;
    a second write of the same key waits for the first to finish, so its metadata never lands on the new data; the
    writer's ``settle`` returns once both are done."""
    import worker.storage.local as local

    disk = threading.Event()
    real_fsync = os.fsync
    monkeypatch.setattr(local.os, "fsync", lambda fd: (disk.wait(30), real_fsync(fd)))
    storage = LocalStorage(tmp_path)
    storage.put("a/b.wav", b"FIRST TAKE", {META_JOB_HASH: "first"}, settle_later=True)
    assert storage.get("a/b.wav") == b"FIRST TAKE"
    assert not (tmp_path / ".f5meta" / "a" / "b.wav.json").exists()
    seen: dict[str, object] = {}
    head = threading.Thread(target=lambda: seen.update(head=storage.head("a/b.wav")))
    second = threading.Thread(target=lambda: (storage.put("a/b.wav", b"SECOND TAKE", {META_JOB_HASH: "second"},
                                                          settle_later=True), storage.settle()))
    head.start()
    second.start()
    time.sleep(0.3)
    assert "head" not in seen and storage.get("a/b.wav") == b"FIRST TAKE"  # both wait for the first flush
    disk.set()
    head.join(30)
    second.join(30)
    storage.settle()
    assert seen["head"].metadata[META_JOB_HASH] in ("first", "second")
    assert storage.get("a/b.wav") == b"SECOND TAKE" and storage.head("a/b.wav").metadata[META_JOB_HASH] == "second"


def test_a_write_whose_writer_never_settles_is_flushed_with_its_metadata_anyway(tmp_path):
    """The flush of a ``settle_later`` write waits for its writer's ``settle`` (so that it never runs beside the job's
    result), but not for ever: a writer that failed before it could still gets its audio flushed and described, and
    its key freed for this process's readers."""
    storage = LocalStorage(tmp_path)
    storage.put("a/b.wav", b"AUDIO", {META_JOB_HASH: "h"}, settle_later=True)
    assert storage.head("a/b.wav").metadata == {META_JOB_HASH: "h"}  # waits for the late flush
    assert json.loads((tmp_path / ".f5meta" / "a" / "b.wav.json").read_text())["metadata"] == {META_JOB_HASH: "h"}


def test_a_flush_the_disk_refuses_fails_the_writers_settle_and_leaves_no_metadata(tmp_path, monkeypatch):
    """An I/O error while a job's audio is flushed: ``settle`` raises (the worker then puts the job's message back in
    its queue instead of acknowledging it), and the audio stays without metadata, absent to the skip check."""
    import errno

    import worker.storage.local as local
    from worker.errors import StorageUnavailableError

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local.os, "fsync", failing_fsync)
    storage = LocalStorage(tmp_path)
    storage.put("a/b.wav", b"AUDIO", {META_JOB_HASH: "h"}, settle_later=True)
    with pytest.raises(StorageUnavailableError, match="EIO"):
        storage.settle()
    storage.settle()  # said once: the thread's next task starts clean
    assert storage.get("a/b.wav") == b"AUDIO" and storage.head("a/b.wav").metadata == {}


class _RefusingS3(BaseHTTPRequestHandler):
    """A real HTTP endpoint that answers as S3 does to a key it will never store."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>KeyTooLongError</Code>'
                b"<Message>Your key is too long</Message><RequestId>1</RequestId></Error>")
        self.send_response(400)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_s3():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_key_that_s3_refuses_is_bad_input_not_a_retry(refusing_s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    storage = S3Storage("books", "run", url="s3://books/run", endpoint_url=refusing_s3, region="us-east-1")
    with pytest.raises(BadInputError) as refused:
        storage.put("a/" + "ü" * 400 + ".wav", b"RIFF....", {})
    assert refused.value.code == "bad_key" and refused.value.field == "output.key"
    assert "KeyTooLongError" in refused.value.message


def test_the_skip_check_keys_on_the_models_files_and_the_precision_not_its_name():
    job = Job.model_validate({"text": "Hola.", "voice": {"ref_audio": "voices/a.wav", "ref_text": REF_TEXT},
                              "params": {"seed": 1}})
    clip = "a" * 64
    base = job.job_hash("fingerprint-of-checkpoint-a", "bf16", clip)
    assert job.job_hash("fingerprint-of-checkpoint-a", "bf16", clip) == base
    assert job.job_hash("fingerprint-of-checkpoint-b", "bf16", clip) != base  # same preset name, another checkpoint
    assert job.job_hash("fingerprint-of-checkpoint-a", "fp32", clip) != base
    assert job.job_hash("fingerprint-of-checkpoint-a", "bf16", "b" * 64) != base  # the voice re-recorded, same name
    reseeded = Job.model_validate({**json.loads(job.model_dump_json()), "params": {"seed": 2}})
    assert reseeded.job_hash("fingerprint-of-checkpoint-a", "bf16", clip) != base


def test_bookkeeping_never_mixes_two_jobs_a_caller_named_alike():
    voice = {"ref_audio": "voices/a.wav", "ref_text": REF_TEXT}
    one = Job.model_validate({"job_id": "1", "text": "Hola.", "voice": voice, "output": {"key": "api/a.wav"}})
    other = Job.model_validate({"job_id": "1", "text": "Adiós.", "voice": voice, "output": {"key": "api/b.wav"}})
    same_text_other_key = Job.model_validate({"job_id": "1", "text": "Hola.", "voice": voice,
                                              "output": {"key": "api/c.wav"}})
    identities = {one.identity(), other.identity(), same_text_other_key.identity()}
    assert len(identities) == 3
    assert one.task_id() != same_text_other_key.task_id(), "jobs differing only in their key share no task id"


def test_the_fingerprint_follows_the_checkpoints_bytes(engine_settings, tmp_path):
    """Two engines of the same preset name over different checkpoint bytes have different fingerprints."""
    from safetensors.torch import load_file, save_file

    from worker.engine.build import load

    first = load(engine_settings)
    state = load_file(str(first.files.checkpoint))
    name = next(k for k in state if k.endswith("proj_out.bias"))
    state[name] = state[name] + 1.0
    changed = tmp_path / "changed.safetensors"
    save_file(state, str(changed))
    second = load(engine_settings.model_copy(update={"ckpt_file": str(changed)}))
    assert first.preset.name == second.preset.name and first.fingerprint != second.fingerprint
    assert os.path.getsize(changed) > 0


def test_a_lost_run_count_asked_beside_the_skip_check_survives_a_dropped_connection(redis_server):
    """The worker asks a job's lost-run history before its skip check and reads it after, on a connection of its own
    from the client's pool. One that dropped since its last use (Redis restarted between two jobs) must not read as "no
    history", which would run a poison job again. (A drop between the question and the answer reads again through the
    client, with its retries: ``LostRuns.ask_history``.)"""
    from worker.constants import LOST_RUNS_KEY_PREFIX, RUN_ALONE_KEY_PREFIX
    from worker.runtime.deliveries import LostRuns

    client = redis_server.client()
    client.set(f"{LOST_RUNS_KEY_PREFIX}dropped-a", 3)
    client.set(f"{RUN_ALONE_KEY_PREFIX}dropped-b", 1)
    runs = LostRuns(redis_server.url)
    assert runs.history(["dropped-a", "dropped-b", "dropped-c"]) == {"dropped-a": (3, False), "dropped-b": (0, True)}
    client.client_kill_filter(_type="normal", skipme=True)  # the pooled connection that read it, among others
    answer = runs.ask_history(["dropped-a", "dropped-b", "dropped-c"])
    assert answer() == {"dropped-a": (3, False), "dropped-b": (0, True)}
    with pytest.raises(RuntimeError):
        answer()  # once: its connection went back to the pool
    client.delete(f"{LOST_RUNS_KEY_PREFIX}dropped-a", f"{RUN_ALONE_KEY_PREFIX}dropped-b")

"""Gathering across messages under the default deployment command (no pool flags): single jobs from a plain Celery
client share the engine's passes, and each still sounds exactly as it does alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.conftest import QUIJOTE_OPENING, REF_TEXT, VOICE_KEY, own_queue, plain_celery, worker_env
from tests.services import WorkerProcess, free_port
from worker.audio import encode_wav
from worker.contract import JobParams
from worker.engine.types import SynthesisRequest, VoiceInput

pytestmark = pytest.mark.timeout(600)

SENTENCES = [s.strip() + "." for s in QUIJOTE_OPENING.replace(",", ".").split(".") if s.strip()]


def _decoded(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32")[0]


@pytest.fixture(scope="module")
def gathering_worker(redis_server, prepared_random_weights, service_dir, tmp_path_factory, ref_wav_bytes):
    store = tmp_path_factory.mktemp("gathering-store")
    (store / "voices").mkdir()
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    port, queue = free_port(), own_queue("gather")
    env = worker_env(redis_server.url, f"file://{store}", prepared_random_weights, F5_QUEUE=queue,
                     F5_METRICS_PORT=str(port), F5_BATCH_WAIT_MS="2000")
    worker = WorkerProcess(env, service_dir / "logs").start()  # the default command: no -P, no -c
    yield worker, store, port, queue
    worker.stop()


def _metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_the_default_command_runs_the_threads_pool_and_an_engine_process(gathering_worker):
    worker, _, _, _ = gathering_worker
    log = worker.log()
    assert "(thread)" in log and "Engine-0 ready" in log
    assert len(worker.children()) == 1


def test_twenty_single_jobs_share_passes_and_sound_as_alone(gathering_worker, redis_server, engine, ref_wav_bytes):
    _worker, store, port, queue = gathering_worker
    client = plain_celery(redis_server.url)
    texts = [SENTENCES[i % len(SENTENCES)] + f" Número {i}." for i in range(20)]
    jobs = [{"text": t, "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT},
             "output": {"key": f"dyn/{i:02d}.wav"}, "params": {"nfe_step": 4, "seed": 100 + i}}
            for i, t in enumerate(texts)]
    passes_before = _metric(port, "f5_pass_rows_count")
    pending = [client.send_task("f5tts.synthesize", kwargs={"job": job}, queue=queue) for job in jobs]
    results = [p.get(timeout=300) for p in pending]
    passes = _metric(port, "f5_pass_rows_count") - passes_before
    assert 1 <= passes <= 4, f"{passes} passes for 20 single jobs"
    assert _metric(port, "f5_jobs_total") >= 20
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    for index, (job, result) in enumerate(zip(jobs, results, strict=True)):
        alone = engine.synthesize([SynthesisRequest(job["text"], voice, JobParams(**job["params"]),
                                                    seed=job["params"]["seed"])])[0]
        stored = _decoded((store / result["key"]).read_bytes())
        expected = _decoded(encode_wav(alone.waveform, 24000))
        assert stored.shape == expected.shape, index
        assert np.abs(stored - expected).max() <= 2 / 32768  # one PCM_16 step, from ≤ 1e-4 before rounding


def test_a_lone_job_runs_alone_once_the_batching_window_has_passed(gathering_worker, redis_server):
    _worker, _store, port, queue = gathering_worker
    client = plain_celery(redis_server.url)
    job = {"text": "Una sola frase.", "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT},
           "output": {"key": "dyn/lone.wav"}, "params": {"nfe_step": 2}}
    passes_before = _metric(port, "f5_pass_rows_count")
    rows_before = _metric(port, "f5_pass_rows_sum")
    result = client.send_task("f5tts.synthesize", kwargs={"job": job}, queue=queue).get(timeout=120)
    assert result["key"] == "dyn/lone.wav" and result["timings"]["batch_wait_s"] is not None
    # nobody came to share its pass: it left part-full, with its one row (how long it waited is bench/'s business)
    assert _metric(port, "f5_pass_rows_count") - passes_before == 1
    assert _metric(port, "f5_pass_rows_sum") - rows_before == 1

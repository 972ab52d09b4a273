"""Dynamic batching: single jobs from concurrent tasks share sampling passes and still sound exactly as alone."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.conftest import QUIJOTE_OPENING, REF_TEXT, VOICE_KEY, plain_celery, worker_env
from tests.services import WorkerProcess, free_port
from worker.audio import encode_wav
from worker.contract import JobParams
from worker.engine.types import SynthesisRequest, VoiceInput
from worker.runtime.batcher import DynamicBatcher

pytestmark = pytest.mark.timeout(600)

SENTENCES = [s.strip() + "." for s in QUIJOTE_OPENING.replace(",", ".").split(".") if s.strip()]


def _decoded(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32")[0]


def test_batcher_merges_concurrent_callers_and_keeps_their_audio(engine, ref_wav_bytes):
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    requests_ = [SynthesisRequest(text, voice, JobParams(nfe_step=4), seed=i) for i, text in enumerate(SENTENCES)]
    alone = [engine.synthesize([r])[0].waveform for r in requests_]
    batcher = DynamicBatcher(engine, max_wait_s=1.0, frame_budget=10**6, max_requests=64)
    results: dict[int, np.ndarray] = {}

    def call(index: int) -> None:
        results[index] = batcher.synthesize([requests_[index]])[0].waveform

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests_))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert batcher.executions < len(requests_)
    for index, waveform in enumerate(alone):
        assert np.abs(results[index] - waveform).max() <= 1e-4


def test_a_failing_companion_does_not_fail_the_others(engine, ref_wav_bytes):
    good = SynthesisRequest(SENTENCES[0], VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(nfe_step=2), seed=1)
    bad = SynthesisRequest(SENTENCES[1], VoiceInput(b"garbage", REF_TEXT), JobParams(nfe_step=2), seed=1)
    batcher = DynamicBatcher(engine, max_wait_s=0.5, frame_budget=10**6, max_requests=64)
    outputs: list = []
    threads = [threading.Thread(target=lambda r=r: outputs.append(batcher.synthesize([r])[0])) for r in (good, bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sorted(o.ok for o in outputs) == [False, True]


@pytest.fixture(scope="module")
def threaded_worker(redis_server, prepared_random_weights, service_dir, tmp_path_factory, ref_wav_bytes):
    store = tmp_path_factory.mktemp("threaded-store")
    (store / "voices").mkdir()
    (store / VOICE_KEY).write_bytes(ref_wav_bytes)
    port = free_port()
    env = worker_env(redis_server.url, f"file://{store}", prepared_random_weights, F5_QUEUE="threaded",
                     F5_METRICS_PORT=str(port), F5_BATCH_WAIT_MS="2000")
    worker = WorkerProcess(env, service_dir / "logs", concurrency=20, extra_args=["-P", "threads", "-Q", "threaded"])
    worker.start()
    yield worker, store, port
    worker.stop()


def _metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_twenty_single_jobs_share_passes(threaded_worker, redis_server, engine, ref_wav_bytes):
    _worker, store, port = threaded_worker
    client = plain_celery(redis_server.url)
    texts = [SENTENCES[i % len(SENTENCES)] + f" Número {i}." for i in range(20)]
    jobs = [{"text": t, "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT},
             "output": {"key": f"dyn/{i:02d}.wav"}, "params": {"nfe_step": 4, "seed": 100 + i}}
            for i, t in enumerate(texts)]
    passes_before = _metric(port, "f5_pass_rows_count")
    pending = [client.send_task("f5tts.synthesize", kwargs={"job": job}, queue="threaded") for job in jobs]
    results = [p.get(timeout=300) for p in pending]
    passes = _metric(port, "f5_pass_rows_count") - passes_before
    assert 1 <= passes < len(jobs)
    assert _metric(port, "f5_jobs_total") >= 20
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    for index, (job, result) in enumerate(zip(jobs, results, strict=True)):
        alone = engine.synthesize([SynthesisRequest(job["text"], voice, JobParams(**job["params"]),
                                                    seed=job["params"]["seed"])])[0]
        stored = _decoded((store / result["key"]).read_bytes())
        expected = _decoded(encode_wav(alone.waveform, 24000))
        assert stored.shape == expected.shape, index
        assert np.abs(stored - expected).max() <= 2 / 32768  # one PCM_16 step, from ≤ 1e-4 before rounding


def test_a_lone_job_waits_at_most_the_batching_window(threaded_worker, redis_server):
    _worker, _store, _port = threaded_worker
    client = plain_celery(redis_server.url)
    job = {"text": "Una sola frase.", "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT},
           "output": {"key": "dyn/lone.wav"}, "params": {"nfe_step": 2}}
    result = client.send_task("f5tts.synthesize", kwargs={"job": job}, queue="threaded").get(timeout=120)
    assert result["timings"]["batch_wait_s"] is not None
    assert result["timings"]["batch_wait_s"] < 2.0 + 1.0  # the 2 s window, plus slack for a loaded CI machine

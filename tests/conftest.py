"""Shared test fixtures: the tiny random F5 model, real reference audio, the corpora, and (below) real services.

Nothing here fakes the model: ``tiny-random`` is the real f5_tts DiT/CFM and vocos classes at tiny size, written to a
checkpoint file and loaded through the same code path as a real checkpoint.
"""

from __future__ import annotations

import os
import uuid
from importlib.resources import files
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REF_TEXT = "Some call me nature, others call me mother nature."
QUIJOTE_OPENING = (
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía un hidalgo de los de "
    "lanza en astillero, adarga antigua, rocín flaco y galgo corredor."
)


DEMO_CORPUS = REPO / "corpora" / "don-quijote-1-2.es.txt"



def corpus_file() -> Path:
    """The book the text tests read: the Quijote excerpt shipped in ``corpora/``, or ``F5_CORPUS`` (for example the
    whole novel as Project Gutenberg publishes it, which the same tests also pass on)."""
    path = Path(os.environ.get("F5_CORPUS") or DEMO_CORPUS)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {path} not found (F5_CORPUS)")
    return path


@pytest.fixture(scope="session")
def quijote_path() -> Path:
    return corpus_file()


@pytest.fixture(scope="session")
def ref_wav_path() -> Path:
    """A real speech clip (5.3 s, 24 kHz, PCM_16) shipped with f5-tts, with its transcript in REF_TEXT."""
    return Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))


@pytest.fixture(scope="session")
def ref_wav_bytes(ref_wav_path: Path) -> bytes:
    return ref_wav_path.read_bytes()


@pytest.fixture(scope="session")
def random_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-weights")


@pytest.fixture(scope="session")
def engine_settings(random_cache: Path):
    from worker.settings import EngineSettings

    return EngineSettings(model="tiny-random", random_cache_dir=str(random_cache), device="cpu", compile=False,
                          cpu_rows_per_pass=64)  # batched passes, as on a GPU: what the engine tests prove


@pytest.fixture(scope="session")
def engine(engine_settings):
    from worker.engine.engine import Engine

    return Engine.build(engine_settings)


@pytest.fixture(scope="session")
def base_like_engine(engine_settings, tmp_path_factory):
    """F5TTS_Base's variant of the DiT at tiny size: rotary on one head only, and no text padding mask, which is why
    each row's text embedding is computed at its own length."""
    import yaml

    from worker.engine.engine import Engine
    from worker.engine.loading import packaged_vocab
    from worker.engine.presets import TINY_ARCH, ModelPreset
    from worker.engine.random_weights import write_random_files

    arch = {**TINY_ARCH, "text_mask_padding": False, "pe_attn_head": 1, "conv_layers": 2}
    folder = tmp_path_factory.mktemp("base-like")
    ckpt, vocoder = write_random_files(ModelPreset(name="base-like", arch=arch, vocoder_size="tiny"),
                                       packaged_vocab(), folder)
    config = folder / "base_like.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": "DiT", "arch": arch}}))
    return Engine.build(engine_settings.model_copy(update={"model": str(config), "ckpt_file": str(ckpt),
                                                           "vocoder_path": str(vocoder)}))


# --------------------------------------------------------------------------------------------- real services

from tests.services import RedisServer, S3Server, WorkerProcess, s3_env  # noqa: E402

BUCKET = "f5-books"
PREFIX = "library"
VOICE_KEY = "voices/narrador.wav"


@pytest.fixture(scope="session")
def service_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_server(service_dir: Path):
    server = RedisServer(service_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(service_dir: Path):
    server = S3Server(service_dir / "s3").start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prepared_random_weights(random_cache: Path) -> Path:
    """Write the tiny checkpoint once, so worker processes find it instead of racing to create it."""
    from worker.engine.loading import packaged_vocab
    from worker.engine.presets import load_preset
    from worker.engine.random_weights import write_random_files

    write_random_files(load_preset("tiny-random"), packaged_vocab(), random_cache)
    return random_cache


def worker_env(redis_url: str, storage_url: str, random_cache: Path, s3_endpoint: str | None = None,
               **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("F5_", "AWS_", "S3_"))}
    env.update(s3_env())
    env.update({
        "BROKER_URL": redis_url, "RESULT_BACKEND": redis_url, "STORAGE_URL": storage_url,
        "F5_MODEL": "tiny-random", "F5_RANDOM_CACHE_DIR": str(random_cache), "F5_DEVICE": "cpu",
        "ENABLE_TORCH_COMPILE": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        "TASK_MAX_RETRIES": "30", "RETRY_BACKOFF_MAX": "4",
        # The random model speaks noise, which every quality check rightly fails: books in tests are rendered once,
        # unless a test of the quality gate turns it on.
        "F5_QA_MODE": "off",
        "OMP_NUM_THREADS": "1",  # two pool processes on a two-core machine: one torch thread each
        # The CPU engine stands in for a GPU's: passes of many rows, the path batching takes on a GPU (a real CPU
        # deployment runs one row per pass, F5_CPU_ROWS_PER_PASS=1, in one engine process per core).
        "F5_CPU_ROWS_PER_PASS": "64",
    })
    if s3_endpoint:
        env["S3_ENDPOINT_URL"] = s3_endpoint
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def voice_in_s3(s3_server: S3Server, ref_wav_bytes: bytes) -> str:
    s3_server.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/{VOICE_KEY}", Body=ref_wav_bytes)
    return VOICE_KEY


@pytest.fixture(scope="session")
def s3_worker(redis_server, s3_server, prepared_random_weights, voice_in_s3, service_dir):
    """One shared worker (two tasks in flight) against Redis and the S3 endpoint, for the plain job tests. It reads at
    most 8 MiB of a reference (the hostile-input table sends a bigger one)."""
    env = worker_env(redis_server.url, f"s3://{BUCKET}/{PREFIX}", prepared_random_weights, s3_server.endpoint,
                     F5_MAX_REFERENCE_BYTES=str(8 * 1024 * 1024))
    worker = WorkerProcess(env, service_dir / "logs", concurrency=2).start()
    yield worker
    worker.stop()


def own_queue(name: str) -> str:
    """A queue no other worker listens on. The session's shared ``s3_worker`` serves the default queue on the same
    Redis, so a test that runs a worker of its own must route its jobs away from it."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def plain_celery(broker_url: str):
    """A Celery client that knows nothing of this project: tasks are addressed by name only."""
    from celery import Celery

    client = Celery("plain", broker=broker_url, backend=broker_url)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return client


def job(text: str, key: str | None = None, **params) -> dict:
    payload = {"text": text, "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT}, "params": {"seed": 7, **params}}
    if key:
        payload["output"] = {"key": key}
    return payload


def two_chapters(quijote: Path, folder: Path, until: str = "Capítulo III.") -> Path:
    """Chapters I and II of the Quijote (or up to ``until``), as a small corpus file (CRLF and all, as published)."""
    raw = quijote.read_bytes()
    start = raw.index("Capítulo primero.".encode())
    end = raw.find(until.encode(), start)
    path = folder / f"quijote-until-{until.split()[1].strip('.')}.txt"
    path.write_bytes(raw[start:] if end < 0 else raw[start:end])
    return path


def cli(env: dict[str, str], *args: str, timeout: float = 300, cwd: Path | None = None):
    """Run the real ``f5-batch`` console script."""
    import subprocess
    import sys

    command = [str(Path(sys.executable).with_name("f5-batch")), *args]
    return subprocess.run(command, env=env, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def rendered_two_chapters(redis_server, prepared_random_weights, tmp_path_factory, quijote_path, ref_wav_path,
                          service_dir):
    """Chapters I-II of the Quijote enqueued with the producer and rendered by a real two-process worker.

    Returns (env, store folder, manifest folder, book id, enqueue result).
    """
    work = tmp_path_factory.mktemp("rendered")
    env = worker_env(redis_server.url, f"file://{work / 'store'}", prepared_random_weights, F5_QUEUE="rendered")
    added = cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT)
    assert added.returncode == 0, added.stderr
    worker = WorkerProcess(env, service_dir / "logs", concurrency=2).start()
    try:
        done = cli(env, "enqueue", str(two_chapters(quijote_path, work)), "--book", "q12", "--voice", "narrador",
                   "--nfe-step", "2", "--manifest-dir", str(work / "m"), "--wait", timeout=500)
    finally:
        worker.stop()
    return env, work / "store", work / "m", "q12", done

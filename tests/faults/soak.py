"""The soak: many tiny jobs through the producer and a two-process worker whose pool processes are SIGKILLed at
random, then storage is counted against the manifest. Shared by the short CI test and ``bench/bench_soak.py``."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from tests.conftest import REF_TEXT, cli, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until


@dataclass
class SoakReport:
    jobs: int
    kills: int
    redelivered: int
    retries: int
    lost: int
    duplicates: int
    corrupt: int
    wrong_length: int
    wall_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def dataset(quijote: Path, count: int, folder: Path) -> Path:
    """A dataset script (.jsonl) of real sentences from the Quijote."""
    text = quijote.read_text(encoding="utf-8-sig")
    body = text[text.index("Capítulo primero"):]
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.;:!?])\s+", body) if 20 <= len(s) <= 140]
    path = folder / "soak.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for index in range(count):
            out.write(json.dumps({"id": f"utt-{index:05d}", "text": sentences[index % len(sentences)]},
                                 ensure_ascii=False) + "\n")
    return path


def expected_samples(engine, ref_wav: bytes, text: str) -> int:
    from worker.contract import JobParams
    from worker.engine.types import SynthesisRequest, VoiceInput

    prepared = engine.prepare(SynthesisRequest(text, VoiceInput(ref_wav, REF_TEXT), JobParams(nfe_step=2), seed=0))
    fade = int(0.15 * 24000)
    lengths = [(c.row.frames - c.ref_frames - 1) * 256 for c in prepared.chunks]
    return sum(lengths) - fade * (len(lengths) - 1)


def run_soak(jobs: int, work: Path, weights: Path, quijote: Path, ref_wav_path: Path, engine,
             kill_every_s: float = 3.0, seed: int = 7, timeout_s: float = 1800) -> SoakReport:
    rng = random.Random(seed)
    redis = RedisServer(work / "redis", appendonly=True).start()
    store = work / "store"
    env = worker_env(redis.url, f"file://{store}", weights, F5_QUEUE="soak", VISIBILITY_TIMEOUT="30",
                     TASK_TIME_LIMIT="25", TASK_SOFT_TIME_LIMIT="20")
    worker = None
    started = time.monotonic()
    kills = 0
    try:
        assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
        corpus = dataset(quijote, jobs, work)
        enqueued = cli(env, "enqueue", str(corpus), "--book", "soak", "--voice", "narrador", "--batch-size", "1",
                       "--nfe-step", "2", "--max-queued", str(jobs + 10), "--manifest-dir", str(work / "m"),
                       timeout=600)
        assert enqueued.returncode == 0, enqueued.stderr[-2000:]
        entries = [json.loads(line) for line in (work / "m" / "soak.jsonl").read_text().splitlines()]
        worker = WorkerProcess(env, work / "logs", concurrency=2).start()

        def stored() -> int:
            return sum(1 for _ in (store / "books" / "soak").rglob("*.wav")) if (store / "books").exists() else 0

        deadline = time.monotonic() + timeout_s
        wait_until(lambda: stored() >= 1, 120, "the first segment")
        next_kill = time.monotonic()  # the first kill as soon as work is flowing, so even a short run has one
        while stored() < len(entries) and time.monotonic() < deadline:
            time.sleep(0.1)
            if time.monotonic() < next_kill or stored() >= 0.9 * len(entries):
                continue  # between kills, or the tail: let it finish undisturbed
            children = worker.children()
            if children:
                os.kill(rng.choice(children).pid, signal.SIGKILL)
                kills += 1
            next_kill = time.monotonic() + rng.uniform(0.5, 2 * kill_every_s)
        wait_until(lambda: stored() >= len(entries), max(1.0, deadline - time.monotonic()), "every segment")
        log = worker.log()
    finally:
        if worker:
            worker.stop()
        redis.stop()
    wall = time.monotonic() - started
    keys = sorted(p.relative_to(store).as_posix() for p in (store / "books" / "soak").rglob("*.wav"))
    wanted = sorted(e["key"] for e in entries)
    ref = ref_wav_path.read_bytes()
    corrupt = wrong = 0
    by_key = {e["key"]: e for e in entries}
    for key in keys:
        try:
            frames = sf.info(io.BytesIO((store / key).read_bytes())).frames
        except Exception:
            corrupt += 1
            continue
        if key in by_key and frames != expected_samples(engine, ref, by_key[key]["normalized"]):
            wrong += 1
    leftovers = list(store.rglob("*.part"))
    return SoakReport(
        jobs=len(entries), kills=kills, redelivered=len(re.findall(r"WorkerLostError", log)),
        retries=len(re.findall(r"Retry in", log)), lost=len(set(wanted) - set(keys)),
        duplicates=len(keys) - len(set(keys)) + len(set(keys) - set(wanted)) + len(leftovers),
        corrupt=corrupt, wrong_length=wrong, wall_s=round(wall, 1))

"""The soak: many tiny jobs through the producer and a worker whose processes are SIGKILLed at random (its engine
process, and now and then the whole worker, which is then started again), then storage is checked against the
manifest. Shared by the short CI test and ``bench/bench_soak.py``.

Storage is the S3 endpoint, and every execution is counted where it cannot hide: the endpoint's own request log, one
``PUT`` per stored WAV. A job run twice stores twice under the same key, so counting keys would miss it; counting
PUTs does not. A job that is skipped because its audio exists makes a HEAD, not a PUT.
"""

from __future__ import annotations

import io
import json
import random
import re
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from tests.conftest import REF_TEXT, cli, worker_env
from tests.services import RedisServer, S3Server, WorkerProcess, wait_until

BUCKET, PREFIX = "soak", "run"


@dataclass
class SoakReport:
    jobs: int
    engine_kills: int
    worker_kills: int
    retried: int
    lost: int
    duplicated: int  # extra executions: PUTs beyond the first, per key
    executions: int  # PUTs of segment WAVs seen by the endpoint
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


def segment_puts(log: str) -> Counter:
    """Successful PUTs of the book's segment WAVs, per key, from the endpoint's request log."""
    found = re.findall(rf'"PUT /{BUCKET}/{PREFIX}/(books/soak/\d{{3}}/[0-9a-f]+\.wav) HTTP/1\.1" 200', log)
    return Counter(found)


def run_soak(jobs: int, work: Path, weights: Path, quijote: Path, ref_wav_path: Path, engine,
             kill_every_s: float = 8.0, seed: int = 7, timeout_s: float = 1800,
             worker_kill_share: float = 0.2, max_kills: int | None = None) -> SoakReport:
    rng = random.Random(seed)
    redis = RedisServer(work / "redis", appendonly=True).start()
    s3 = S3Server(work / "s3").start()
    s3.create_bucket(BUCKET)
    env = worker_env(redis.url, f"s3://{BUCKET}/{PREFIX}", weights, s3.endpoint, F5_QUEUE="soak",
                     VISIBILITY_TIMEOUT="15", TASK_TIME_LIMIT="12", TASK_SOFT_TIME_LIMIT="10",
                     F5_MAX_LOST_RUNS="50")  # random kills are not poison: never dead-letter a job for them
    worker = None
    started = time.monotonic()
    engine_kills = worker_kills = 0
    logs: list[str] = []
    try:
        assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
        corpus = dataset(quijote, jobs, work)
        enqueued = cli(env, "enqueue", str(corpus), "--book", "soak", "--voice", "narrador", "--batch-size", "1",
                       "--nfe-step", "2", "--max-queued", str(jobs + 10), "--manifest-dir", str(work / "m"),
                       timeout=600)
        assert enqueued.returncode == 0, enqueued.stderr[-2000:]
        entries = [json.loads(line) for line in (work / "m" / "soak.jsonl").read_text().splitlines()]
        wanted = {e["key"] for e in entries}
        worker = WorkerProcess(env, work / "logs").start()

        def stored() -> int:  # segment WAVs (the manifest and the book record sit beside them)
            return sum(1 for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/books/soak/",
                                                              MaxKeys=jobs + 10).get("Contents", [])
                       if o["Key"].endswith(".wav"))

        deadline = time.monotonic() + timeout_s
        wait_until(lambda: stored() >= 1, 120, "the first segment")
        next_kill = time.monotonic()  # the first kill as soon as work flows, so even a short run has one
        while stored() < len(entries) and time.monotonic() < deadline:
            time.sleep(0.2)
            kills = engine_kills + worker_kills
            if time.monotonic() < next_kill or stored() >= 0.9 * len(entries) or kills == max_kills:
                continue  # between kills, or the tail: let it finish undisturbed
            # the second kill takes the whole worker down (so even a short run has both kinds), later ones at random
            if kills == 1 or (kills > 1 and rng.random() < worker_kill_share):  # its messages come back after the
                # visibility timeout
                worker.stop(signal.SIGKILL)
                logs.append(worker.log())
                worker_kills += 1
                worker = WorkerProcess(env, work / "logs").start()
            elif worker.children():
                worker.kill_child(signal.SIGKILL)
                engine_kills += 1
            next_kill = time.monotonic() + rng.uniform(0.5 * kill_every_s, 1.5 * kill_every_s)
        wait_until(lambda: stored() >= len(entries), max(1.0, deadline - time.monotonic()), "every segment")
        logs.append(worker.log())
        puts = segment_puts((work / "s3" / f"moto-{s3.port}.log").read_text(errors="replace"))
        listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/books/soak/", MaxKeys=jobs + 10)
        keys = {o["Key"][len(PREFIX) + 1:] for o in listed.get("Contents", []) if o["Key"].endswith(".wav")}
        ref = ref_wav_path.read_bytes()
        by_key = {e["key"]: e for e in entries}
        corrupt = wrong = 0
        for key in keys:
            data = s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()
            try:
                frames = sf.info(io.BytesIO(data)).frames
            except Exception:
                corrupt += 1
                continue
            if key in by_key and frames != expected_samples(engine, ref, by_key[key]["normalized"]):
                wrong += 1
    finally:
        if worker:
            worker.stop()
        s3.stop()
        redis.stop()
    log = "\n".join(logs)
    return SoakReport(
        jobs=len(entries), engine_kills=engine_kills, worker_kills=worker_kills,
        retried=len(re.findall(r"retry: Retry in", log)), lost=len(wanted - keys),
        duplicated=sum(count - 1 for count in puts.values() if count > 1) + len(keys - wanted),
        executions=sum(puts.values()), corrupt=corrupt, wrong_length=wrong,
        wall_s=round(time.monotonic() - started, 1))

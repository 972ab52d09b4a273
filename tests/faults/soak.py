"""The soak: many tiny jobs through the producer and a worker whose processes are SIGKILLed at random (its engine
process, and now and then the whole worker, which is then started again), then storage is checked against the
manifest. Shared by the short CI test and ``bench/bench_soak.py``.

The jobs arrive the three ways users send them: half the book by an enqueue interrupted with Ctrl-C (SIGINT), the rest
by ``f5-batch resume`` once the worker runs, and a tenth as many jobs again through the HTTP gateway's ``/v1/jobs``
(real ``f5-batch serve``), all while the kills go on.

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
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
import soundfile as sf

from tests.conftest import REF_TEXT, cli, worker_env
from tests.services import GatewayProcess, RedisServer, S3Server, WorkerProcess, wait_until

BUCKET, PREFIX = "soak", "run"
TOKEN = "soak-token"  # the gateway's bearer token in this run (a test secret)


@dataclass
class SoakReport:
    jobs: int  # book segments and gateway jobs together
    via_resume: int  # book segments published by `f5-batch resume` after the interrupted enqueue
    via_gateway: int
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
    sentences = list(dict.fromkeys(" ".join(s.split()) for s in re.split(r"(?<=[.;:!?])\s+", body)
                                   if 20 <= len(s) <= 140))
    if count > len(sentences):  # keys follow content: a repeated sentence would be one job, not two
        raise ValueError(f"{quijote} holds {len(sentences)} distinct sentences, fewer than {count} jobs; point "
                         "F5_CORPUS at the whole Quijote")
    path = folder / "soak.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for index in range(count):
            out.write(json.dumps({"id": f"utt-{index:05d}", "text": sentences[index]}, ensure_ascii=False) + "\n")
    return path


def expected_samples(engine, ref_wav: bytes, text: str) -> int:
    from worker.contract import JobParams
    from worker.engine.types import SynthesisRequest, VoiceInput

    prepared = engine.prepare(SynthesisRequest(text, VoiceInput(ref_wav, REF_TEXT), JobParams(nfe_step=2), seed=0))
    fade = int(0.15 * 24000)
    lengths = [(c.row.frames - c.ref_frames - 1) * 256 for c in prepared.chunks]
    return sum(lengths) - fade * (len(lengths) - 1)


def segment_puts(log: str) -> Counter:
    """Successful PUTs of the book's segment WAVs and the gateway's jobs, per key, from the endpoint's request log."""
    keys = r"books/soak/\d{3}/[0-9a-f]+\.wav|api/soak/\d{5}\.wav"
    found = re.findall(rf'"PUT /{BUCKET}/{PREFIX}/({keys}) HTTP/1\.1" 200', log)
    return Counter(found)


def _interrupted_enqueue(env: dict[str, str], corpus: Path, manifests: Path, half: int) -> None:
    """``f5-batch enqueue`` held by backpressure at ``half`` queued jobs (no worker yet), then Ctrl-C: a partial
    manifest that ``resume`` continues."""
    command = [str(Path(sys.executable).with_name("f5-batch")), "enqueue", str(corpus), "--book", "soak", "--voice",
               "narrador", "--batch-size", "1", "--nfe-step", "2", "--max-queued", str(half), "--manifest-dir",
               str(manifests)]
    log = manifests.parent / "interrupted-enqueue.log"
    manifests.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        producer = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    partial = manifests / "soak.jsonl.partial"
    try:
        wait_until(lambda: (partial.exists() and len(partial.read_text().splitlines()) >= half)
                   or producer.poll() is not None, 300, "half the book published")
        producer.send_signal(signal.SIGINT)
        assert producer.wait(60) == 130, log.read_text(errors="replace")[-2000:]
    finally:
        producer.kill()


def _gateway_jobs(gateway: GatewayProcess, sentences: list[str]) -> dict[str, str]:
    """Send one job per sentence through ``/v1/jobs``; their keys (in the gateway's namespace) and texts."""
    sent = {}
    for index, text in enumerate(sentences):
        key = f"api/soak/{index:05d}.wav"
        body = {"job_id": f"gw-{index:05d}", "text": text, "voice": {"ref_audio": "voices/narrador.wav",
                "ref_text": REF_TEXT}, "output": {"key": key}, "params": {"nfe_step": 2}}
        answer = requests.post(f"{gateway.url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                               timeout=60)
        assert answer.status_code == 202, answer.text
        sent[key] = text
    return sent


def _stored_keys(s3: S3Server, limit: int) -> set[str]:
    """The book's segment WAVs and the gateway's jobs in storage (the manifest and book record sit beside them)."""
    return {o["Key"][len(PREFIX) + 1:] for prefix in ("books/soak/", "api/soak/")
            for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}",
                                                 MaxKeys=limit).get("Contents", [])
            if o["Key"].endswith(".wav")}


def run_soak(jobs: int, work: Path, weights: Path, quijote: Path, ref_wav_path: Path, engine,
             kill_every_s: float = 8.0, seed: int = 7, timeout_s: float = 1800,
             worker_kill_share: float = 0.2, max_kills: int | None = None) -> SoakReport:
    rng = random.Random(seed)
    redis = RedisServer(work / "redis", appendonly=True).start()
    s3 = S3Server(work / "s3").start()
    s3.create_bucket(BUCKET)
    env = worker_env(redis.url, f"s3://{BUCKET}/{PREFIX}", weights, s3.endpoint, F5_QUEUE="soak",
                     VISIBILITY_TIMEOUT="15", TASK_TIME_LIMIT="12", TASK_SOFT_TIME_LIMIT="10",
                     F5_MAX_LOST_RUNS="50",  # random kills are not poison: never dead-letter a job for them
                     F5_GATEWAY_TOKENS=TOKEN, F5_GATEWAY_RATE="0")
    worker = gateway = None
    started = time.monotonic()
    engine_kills = worker_kills = 0
    logs: list[str] = []
    manifests = work / "m"
    try:
        assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
        corpus = dataset(quijote, jobs, work)
        _interrupted_enqueue(env, corpus, manifests, jobs // 2)
        partial = [json.loads(line) for line in (manifests / "soak.jsonl.partial").read_text().splitlines()]
        interrupted = len(partial)
        gateway = GatewayProcess(env, work / "logs").start()
        extra = [e["normalized"] for e in partial[: max(6, jobs // 10)]]  # the book's sentences, as another client
        texts = _gateway_jobs(gateway, extra)
        worker = WorkerProcess(env, work / "logs").start()
        resumed = cli(env, "resume", "soak", "--max-queued", str(jobs + 10), "--manifest-dir", str(manifests),
                      timeout=600)  # while the worker runs: what it holds is on its way, not sent again
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        entries = [json.loads(line) for line in (manifests / "soak.jsonl").read_text().splitlines()]
        texts.update({e["key"]: e["normalized"] for e in entries})
        wanted = set(texts)

        def stored() -> int:
            return len(_stored_keys(s3, 2 * jobs + 10))

        deadline = time.monotonic() + timeout_s
        wait_until(lambda: stored() >= 1, 120, "the first segment")
        next_kill = time.monotonic()  # the first kill as soon as work flows, so even a short run has one
        while stored() < len(wanted) and time.monotonic() < deadline:
            time.sleep(0.2)
            if worker.process is not None and worker.process.poll() is not None:  # nobody killed it: it stopped
                raise AssertionError(f"the worker exited by itself ({worker.process.returncode}):\n"
                                     f"{worker.log()[-4000:]}")
            kills = engine_kills + worker_kills
            if time.monotonic() < next_kill or kills == max_kills or (kills >= 2 and stored() >= 0.9 * len(wanted)):
                continue  # between kills, or the tail: let it finish undisturbed (after one kill of each kind)
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
        wait_until(lambda: stored() >= len(wanted), max(1.0, deadline - time.monotonic()), "every segment")
        logs.append(worker.log())
        puts = segment_puts((work / "s3" / f"moto-{s3.port}.log").read_text(errors="replace"))
        keys = _stored_keys(s3, 2 * jobs + 10)
        ref = ref_wav_path.read_bytes()
        corrupt = wrong = 0
        for key in keys:
            data = s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()
            try:
                frames = sf.info(io.BytesIO(data)).frames
            except Exception:
                corrupt += 1
                continue
            if key in texts and frames != expected_samples(engine, ref, texts[key]):
                wrong += 1
    finally:
        if gateway:
            gateway.stop()
        if worker:
            worker.stop()
        s3.stop()
        redis.stop()
    log = "\n".join(logs)
    return SoakReport(
        jobs=len(wanted), via_resume=len(entries) - interrupted, via_gateway=len(wanted) - len(entries),
        engine_kills=engine_kills, worker_kills=worker_kills,
        retried=len(re.findall(r"retry: Retry in", log)), lost=len(wanted - keys),
        duplicated=sum(count - 1 for count in puts.values() if count > 1) + len(keys - wanted),
        executions=sum(puts.values()), corrupt=corrupt, wrong_length=wrong,
        wall_s=round(time.monotonic() - started, 1))

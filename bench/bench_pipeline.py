"""End-to-end pipeline benchmark: real redis-server, moto's S3 server over HTTP, a real ``celery -A worker worker``.

Measures what the pipeline adds beyond inference for each job (broker, result backend, storage, WAV encoding, the
hand-over to the engine process): jobs are sent one at a time and the client-side latency minus the engine's inference
time is the overhead, broken down by stage from the job's own timings (queue: publish to task start; check: skip
check and reference; prepare, engine wait, finish: inside the engine process; transfer: the pipe both ways; encode;
upload; the rest: the task's start and end in Celery and the result's way back). Sent through the project's client
(whose publish wakes an idle worker at once) and through a plain Celery client (served at the worker's next poll).
Then the same jobs are sent all at once, as singles and as producer-style batches, for throughput. The worker runs the
default deployment command (threads pool, one engine process). Writes ``bench/results/pipeline-cpu.json``.

    python bench/bench_pipeline.py --jobs 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REF_TEXT, print_table, quijote_segments, write_results
from tests.conftest import worker_env
from tests.services import RedisServer, S3Server, WorkerProcess

BUCKET, PREFIX, VOICE = "bench", "run", "voices/narrador.wav"


def _job(text: str, index: int, nfe: int, tag: str) -> dict:
    return {"job_id": f"{tag}-{index:05d}", "text": text, "voice": {"ref_audio": VOICE, "ref_text": REF_TEXT},
            "output": {"key": f"{tag}/{index:05d}.wav"}, "params": {"nfe_step": nfe, "seed": index}}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


STAGES = ("queue", "check", "prepare", "engine_wait", "finish", "transfer", "encode", "upload")


def _sequential(client, segments: list[str], nfe: int, tag: str, mode: str, project: bool = True) -> dict:
    """Jobs sent one at a time (the worker idle in between): client latency minus engine inference is what the
    pipeline adds; the job's timings say where."""
    from worker.constants import ENQUEUED_AT_HEADER

    for warm in range(2):  # first calls allocate; not part of the figures
        client.send_task("f5tts.synthesize", kwargs={"job": _job(segments[warm], warm, nfe, f"warm-{tag}")},
                         queue="f5tts").get(timeout=300)
    overheads, latencies, inference = [], [], []
    stages: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "rest")}
    for index, text in enumerate(segments):
        time.sleep(0.2)  # an idle worker, as a lone job finds it
        start = time.perf_counter()
        job = _job(text, index, nfe, tag)
        # the summary for Flower that the project's clients (gateway, producer) send, so that Celery does not write
        # one out of the whole job (about 0.3 ms); a plain client pays that
        summary = {"kwargsrepr": f"{{'job': {job['job_id']!r}}}"} if project else {}
        # get() returns as the result's pub/sub message arrives, whatever its interval; a short interval would only
        # wake this client every few ms, on the same two cores as the worker it measures
        result = client.send_task("f5tts.synthesize", kwargs={"job": job}, queue="f5tts",
                                  headers={ENQUEUED_AT_HEADER: time.time()}, **summary).get(timeout=300)
        latency = time.perf_counter() - start
        timings = result["timings"]
        latencies.append(latency)
        inference.append(timings["inference_s"])
        overheads.append(latency - timings["inference_s"])
        accounted = timings["inference_s"]
        for stage in STAGES:
            value = timings.get(f"{stage}_s") or 0.0
            stages[stage].append(value)
            accounted += value
        stages["rest"].append(max(0.0, latency - accounted))
    row = {"mode": mode, "jobs": len(segments),
           "overhead_median_ms": round(1000 * statistics.median(overheads), 2),
           "overhead_p95_ms": round(1000 * _percentile(overheads, 0.95), 2),
           "latency_median_ms": round(1000 * statistics.median(latencies), 2),
           "inference_median_ms": round(1000 * statistics.median(inference), 2)}
    row.update({f"{stage}_median_ms": round(1000 * statistics.median(values), 2) for stage, values in stages.items()})
    return row


def project_client(redis_url: str):
    """The project's own Celery app, publishing through the workers' transport (its publish wakes idle workers)."""
    from worker.celery_app import create_app, publish_through_the_hardened_transport
    from worker.settings import BrokerSettings, Settings

    settings = Settings(broker=BrokerSettings(broker_url=redis_url, result_backend=redis_url))
    return publish_through_the_hardened_transport(create_app(settings), settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="tasks in flight (-c); default: the worker's own (2 × F5_MAX_BATCH)")
    args = parser.parse_args()

    from importlib.resources import files

    from celery import Celery

    work = Path(tempfile.mkdtemp(prefix="f5bench-pipeline-"))
    redis = RedisServer(work / "redis").start()
    s3 = S3Server(work / "s3").start()
    s3.create_bucket(BUCKET)
    ref_wav = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))).read_bytes()
    s3.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/{VOICE}", Body=ref_wav)
    env = worker_env(redis.url, f"s3://{BUCKET}/{PREFIX}", work / "weights", s3.endpoint)
    worker = WorkerProcess(env, work / "logs", concurrency=args.concurrency).start()
    plain = Celery("bench", broker=redis.url, backend=redis.url)
    plain.conf.update(task_serializer="json", accept_content=["json"])
    client = project_client(redis.url)
    segments = quijote_segments(args.jobs)
    rows = []
    try:
        rows.append(_sequential(client, segments, args.nfe, "seq", "sequential singles (moto S3)"))
        audio = []
        for mode in ("concurrent singles", "producer batches"):
            tag = "single" if mode == "concurrent singles" else "batch"
            start = time.perf_counter()
            if tag == "single":
                pending = [client.send_task("f5tts.synthesize", kwargs={"job": _job(t, i, args.nfe, tag)},
                                            queue="f5tts") for i, t in enumerate(segments)]
                results = [p.get(timeout=600) for p in pending]
            else:
                groups = [list(enumerate(segments))[i : i + args.batch] for i in range(0, len(segments), args.batch)]
                pending = [client.send_task("f5tts.synthesize_batch", kwargs={
                    "jobs": [_job(t, i, args.nfe, tag) for i, t in group]}, queue="f5tts") for group in groups]
                results = [item["result"] for p in pending for item in p.get(timeout=600)]
            wall = time.perf_counter() - start
            audio_s = sum(r["duration_s"] for r in results)
            audio.append(audio_s)
            rows.append({"mode": mode, "jobs": len(results), "wall_s": round(wall, 3),
                         "audio_s_per_s": round(audio_s / wall, 3), "jobs_per_s": round(len(results) / wall, 2),
                         "inference_share": round(sum(r["timings"]["inference_s"] for r in results) / wall, 3)})
        worker.stop()
        # the same sequential singles with a local storage folder: what the pipeline itself adds, without moto's
        # HTTP round trips (a HEAD for the skip check and a PUT)
        store = work / "store"
        (store / "voices").mkdir(parents=True)
        (store / VOICE).write_bytes(ref_wav)
        worker = WorkerProcess(worker_env(redis.url, f"file://{store}", work / "weights"), work / "logs",
                               concurrency=args.concurrency).start()
        rows.append(_sequential(client, segments, args.nfe, "local", "sequential singles (local folder storage)"))
        rows.append(_sequential(plain, segments, args.nfe, "plain", "sequential singles, plain Celery client "
                                                                     "(no wake-up: the worker's poll)", project=False))
    finally:
        worker.stop()
        s3.stop()
        redis.stop()
    print_table(rows, ["mode", "jobs", "overhead_median_ms", "overhead_p95_ms", "latency_median_ms",
                       "inference_median_ms", "wall_s", "audio_s_per_s", "jobs_per_s"])
    print()
    print_table([r for r in rows if "queue_median_ms" in r],
                ["mode", *(f"{stage}_median_ms" for stage in (*STAGES, "rest"))])
    path = write_results("pipeline-cpu", {"device": "cpu", "model": "tiny-random", "nfe_step": args.nfe,
                                          "concurrency": args.concurrency, "rows": rows,
                                          "note": "overhead = client latency - engine inference time, per job"})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

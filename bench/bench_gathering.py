"""Does the default deployment fill passes and keep the engine busy? Real worker, real Redis, moto's S3 endpoint, the
tiny random model on CPU, the worker started with the default command (no pool flags).

Two cases, the same two chapters of the Quijote:

1. the book sent by the producer with its defaults (``f5-batch enqueue``: batches of 8 segments), once per quality
   gate in ``--qa`` (default ``off,signal``: the gate's checks must not cost fill; ``asr`` adds a QA worker with
   pocketsphinx). One take per segment (``--qa-attempts 1``): the random model fails every check, and re-renders
   would change the workload rather than measure the checks;
2. the same segments sent as single ``f5tts.synthesize`` jobs by a plain Celery client (another backend).

From the worker's own Prometheus metrics, over the window in which the queue is deep (from the first stored segment
until 80% are stored): mean rows per pass, fill (real frames over padded frames), and the engine's idle time between
passes over its busy time. The tiny DiT, a 2-second reference and NFE 1 on one CPU thread give full passes of about
2 s here; on a GPU at the goal's speed a full pass takes 0.2-0.5 s while the per-job I/O (encode, HEAD, PUT, about
30 ms per job) stays the same, so the idle share measured here is a lower bound for a GPU, not a prediction. Prints a
table and writes ``bench/results/gathering-cpu.json`` (or ``--name``).

    python bench/bench_gathering.py [--nfe 1] [--chapters 1-2] [--qa off,signal,asr]
    python bench/bench_gathering.py --threads 2 --batch-frames 24000 --name gathering-cpu-short-passes
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
import soundfile as sf

from bench.common import corpus_path, print_table, write_results
from tests.conftest import cli, worker_env
from tests.services import RedisServer, S3Server, WorkerProcess, free_port, wait_until

BUCKET, PREFIX, VOICE = "gather", "run", "voices/narrador.wav"
REF_TEXT = "Some call me nature,"  # what the first two seconds of f5-tts' English example say
REF_SECONDS = 2.0
METRICS = ("f5_pass_rows_sum", "f5_pass_rows_count", 'f5_pass_frames_total{kind="real"}',
           'f5_pass_frames_total{kind="padded"}', "f5_engine_busy_seconds_total", "f5_engine_idle_seconds_total",
           "f5_pass_seconds_sum", "f5_recompiles_total")


def short_reference() -> bytes:
    samples, rate = sf.read(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")), dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, samples[: int(REF_SECONDS * rate)], rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def metrics(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    return {name: values.get(name, 0.0) for name in METRICS}


def stored(s3: S3Server, prefix: str) -> int:
    count, token = 0, None
    client = s3.client()
    while True:
        page = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}",
                                      **({"ContinuationToken": token} if token else {}))
        count += sum(1 for item in page.get("Contents", []) if item["Key"].endswith(".wav"))
        if not page.get("IsTruncated"):
            return count
        token = page["NextContinuationToken"]


def window(case: str, s3: S3Server, prefix: str, total: int, port: int, timeout_s: float = 1800) -> dict:
    """Metrics between the first stored segment and 80% stored (the queue is deep in between), and the whole run."""
    start = time.monotonic()
    wait_until(lambda: stored(s3, prefix) >= 1, timeout_s, f"{case}: the first segment")
    before, t0 = metrics(port), time.monotonic()
    wait_until(lambda: stored(s3, prefix) >= 0.8 * total, timeout_s, f"{case}: 80% of the segments", interval=0.5)
    after, t1 = metrics(port), time.monotonic()
    wait_until(lambda: stored(s3, prefix) >= total, timeout_s, f"{case}: every segment", interval=0.5)
    delta = {name: after[name] - before[name] for name in METRICS}
    passes = delta["f5_pass_rows_count"]
    busy = delta["f5_engine_busy_seconds_total"]
    return {"case": case, "segments": total, "window_s": round(t1 - t0, 1), "passes": int(passes),
            "rows_per_pass": round(delta["f5_pass_rows_sum"] / passes, 2) if passes else None,
            "fill": round(delta['f5_pass_frames_total{kind="real"}'] / delta['f5_pass_frames_total{kind="padded"}'],
                          3) if passes else None,
            "pass_s_mean": round(delta["f5_pass_seconds_sum"] / passes, 3) if passes else None,
            "busy_s": round(busy, 1), "idle_s": round(delta["f5_engine_idle_seconds_total"], 2),
            "idle_over_busy": round(delta["f5_engine_idle_seconds_total"] / busy, 4) if busy else None,
            "recompiles": int(delta["f5_recompiles_total"]), "total_s": round(time.monotonic() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nfe", type=int, default=1)
    parser.add_argument("--chapters", default="1-2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the engine process")
    parser.add_argument("--batch-frames", type=int, default=None,
                        help="F5_BATCH_FRAMES, the frame budget of a pass (default: the worker's own)")
    parser.add_argument("--name", default="gathering-cpu", help="results file name")
    parser.add_argument("--qa", default="off,signal", help="quality gates to run case 1 with, comma-separated")
    args = parser.parse_args()
    gates = [g.strip() for g in args.qa.split(",") if g.strip()]

    work = Path(tempfile.mkdtemp(prefix="f5bench-gather-"))
    redis = RedisServer(work / "redis", appendonly=True).start()
    s3 = S3Server(work / "s3").start()
    s3.create_bucket(BUCKET)
    port = free_port()
    env = worker_env(redis.url, f"s3://{BUCKET}/{PREFIX}", work / "weights", s3.endpoint, F5_METRICS_PORT=str(port),
                     OMP_NUM_THREADS=str(args.threads), F5_QA_ASR="pocketsphinx",
                     **({"F5_BATCH_FRAMES": str(args.batch_frames)} if args.batch_frames else {}))
    reference = work / "narrador.wav"
    reference.write_bytes(short_reference())
    assert cli(env, "voice", "add", "narrador", str(reference), "--text", REF_TEXT).returncode == 0
    worker = WorkerProcess(env, work / "logs").start()  # the default deployment command: no -P, no -c
    qa = WorkerProcess({**env, "F5_WORKER_ROLE": "qa"}, work / "logs").start() if "asr" in gates else None
    rows = []
    try:
        manifests = work / "manifests"
        for gate in gates:
            book = f"book-{gate}"
            enqueue = cli(env, "enqueue", str(corpus_path()), "--book", book, "--voice", "narrador", "--chapters",
                          args.chapters, "--nfe-step", str(args.nfe), "--qa", gate, "--qa-attempts", "1",
                          "--manifest-dir", str(manifests), timeout=600)
            assert enqueue.returncode == 0, enqueue.stderr[-2000:]
            entries = [json.loads(line) for line in (manifests / f"{book}.jsonl").read_text().splitlines()]
            rows.append({**window(f"1: producer, defaults (batches of 8), qa {gate}", s3, f"books/{book}/",
                                  len(entries), port), "qa": gate})

        from celery import Celery

        client = Celery("plain", broker=redis.url, backend=redis.url)
        client.conf.update(task_serializer="json", accept_content=["json"])
        for entry in entries:  # the same segments, one job each, as another backend sends them
            job = {"text": entry["normalized"], "voice": {"ref_audio": VOICE, "ref_text": REF_TEXT},
                   "output": {"key": f"singles/{entry['chapter']:03d}/{entry['index']:05d}.wav"},
                   "params": {"nfe_step": args.nfe}}
            client.send_task("f5tts.synthesize", kwargs={"job": job}, queue="f5tts")
        rows.append(window("2: single jobs, plain Celery client", s3, "singles/", len(entries), port))
    finally:
        worker.stop()
        if qa is not None:
            qa.stop()
        s3.stop()
        redis.stop()
    print_table(rows, ["case", "segments", "passes", "rows_per_pass", "fill", "pass_s_mean", "busy_s", "idle_s",
                       "idle_over_busy", "recompiles", "window_s"])
    path = write_results(args.name, {
        "setup": {"worker": "celery -A worker worker (defaults: threads pool, one engine process)",
                  "model": f"tiny-random on CPU, {args.threads} torch thread(s)", "nfe_step": args.nfe,
                  "batch_frames": args.batch_frames or "the worker's default",
                  "reference_s": REF_SECONDS,
                  "qa": "one take per segment; asr: pocketsphinx on a QA worker",
                  "storage": "moto S3 server over HTTP", "broker": "redis-server",
                  "window": "from the first stored segment until 80% are stored (the queue is deep)"},
        "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

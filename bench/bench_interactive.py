"""Interactive requests behind a book: ``/tts`` latency with the worker idle, and while a 200-segment book drains, with
the book's throughput in both cases (the book alone, and the book with the interactive requests).

Real parts: redis-server, a local storage folder, a worker (default command, tiny random model on CPU, passes of many
rows as on a GPU: ``F5_CPU_ROWS_PER_PASS``) and ``f5-batch serve``. While interactive work (priority 0) has been seen,
the engine cuts the book's passes to what its measured pass cost says fits in ``F5_INTERACTIVE_TARGET_MS``, so a request
that arrives waits about that long for the pass in flight (see ``worker.runtime.scheduler``). Writes
``bench/results/interactive-cpu.json``.

    python bench/bench_interactive.py --requests 20 --book 200
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.common import REF_TEXT, print_table, write_results
from tests.conftest import cli, two_chapters, worker_env
from tests.services import GatewayProcess, RedisServer, WorkerProcess

TOKEN = "bench-token"
BODY = {"gen_text": "Hola, esta es una prueba de rendimiento.", "ref_text": "", "nfe_step": 16, "use_fp16": True}
SEEDS = itertools.count()  # a new seed per request: the same text and seed would be stored once and skipped after


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _tts(gateway: GatewayProcess, count: int, pause_s: float, stop: threading.Event | None = None) -> list[float]:
    latencies = []
    for _ in range(count):
        if stop is not None and stop.is_set():
            break
        start = time.perf_counter()
        answer = requests.post(f"{gateway.url}/tts", json={**BODY, "seed": next(SEEDS)}, timeout=300,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        answer.raise_for_status()
        latencies.append(time.perf_counter() - start)
        time.sleep(pause_s)
    return latencies


def _book(env: dict, corpus: Path, manifests: Path, book: str) -> tuple[int, float]:
    """Enqueue a book and wait until it is rendered: (segments, seconds from the first publish to the last WAV)."""
    start = time.perf_counter()
    done = cli(env, "enqueue", str(corpus), "--book", book, "--voice", "narrador", "--nfe-step", "16",
               "--manifest-dir", str(manifests), "--wait", "--progress-every", "5", timeout=3000)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return len((manifests / f"{book}.jsonl").read_text().splitlines()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between interactive requests")
    parser.add_argument("--target-ms", type=float, default=250.0, help="F5_INTERACTIVE_TARGET_MS")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="f5bench-interactive-"))
    redis = RedisServer(work / "redis").start()
    ref = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))
    env = worker_env(redis.url, f"file://{work / 'store'}", work / "weights", F5_GATEWAY_TOKENS=TOKEN,
                     F5_DEFAULT_VOICE="narrador", F5_INTERACTIVE_TARGET_MS=str(args.target_ms),
                     F5_GATEWAY_TTS_TIMEOUT="300")
    assert cli(env, "voice", "add", "narrador", str(ref), "--text", REF_TEXT).returncode == 0
    from bench.common import corpus_path

    corpus = two_chapters(corpus_path(), work)  # chapters I-II: about 200 segments
    worker = WorkerProcess(env, work / "logs").start()
    gateway = GatewayProcess(env, work / "logs").start()
    rows: list[dict[str, Any]] = []
    try:
        _tts(gateway, 3, 0.0)  # warm-up
        idle = _tts(gateway, args.requests, args.pause)
        segments, alone_s = _book(env, corpus, work / "m1", "alone")
        stop = threading.Event()
        during: list[float] = []
        book_result: dict = {}

        def drain() -> None:
            book_result["segments"], book_result["seconds"] = _book(env, corpus, work / "m2", "shared")
            stop.set()

        thread = threading.Thread(target=drain)
        thread.start()
        time.sleep(5)  # the book's first passes are under way
        while not stop.is_set():
            during += _tts(gateway, 1, args.pause, stop)
        thread.join()
        for name, values in (("/tts, worker idle", idle), ("/tts while a book drains", during)):
            rows.append({"case": name, "requests": len(values),
                         "median_ms": round(1000 * statistics.median(values), 1),
                         "p95_ms": round(1000 * _percentile(values, 0.95), 1)})
        rows.append({"case": "book alone", "segments": segments, "seconds": round(alone_s, 1),
                     "segments_per_s": round(segments / alone_s, 3)})
        rows.append({"case": "book with interactive requests", "segments": book_result["segments"],
                     "seconds": round(book_result["seconds"], 1),
                     "segments_per_s": round(book_result["segments"] / book_result["seconds"], 3)})
    finally:
        gateway.stop()
        worker.stop()
        redis.stop()
    idle_p95, busy_p95 = rows[0]["p95_ms"], rows[1]["p95_ms"]
    loss = 1 - rows[3]["segments_per_s"] / rows[2]["segments_per_s"]
    print_table(rows, ["case", "requests", "median_ms", "p95_ms", "segments", "seconds", "segments_per_s"])
    print(f"\np95 while the book drains / idle: {busy_p95 / idle_p95:.2f}; book throughput lost: {100 * loss:.1f}%")
    path = write_results("interactive-cpu", {
        "device": "cpu", "model": "tiny-random", "interactive_target_ms": args.target_ms, "rows": rows,
        "p95_ratio": round(busy_p95 / idle_p95, 3), "book_throughput_loss": round(loss, 3),
        "note": "passes of many rows as on a GPU (F5_CPU_ROWS_PER_PASS=64 from the test environment)"})
    print(f"wrote {path}")
    print(json.dumps(rows[:2]))


if __name__ == "__main__":
    main()

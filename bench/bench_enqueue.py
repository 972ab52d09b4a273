"""Producer benchmark: the whole Quijote (2.2 MB) through ``f5-batch enqueue`` into a private Redis.

Reports wall time, segments per second and peak memory (resident set of the CLI and its publisher process, sampled
together), for batch jobs (the default) and one job per segment. Targets: ≤ 10 s and ≤ 200 MB on a 2-core machine.
Writes ``bench/results/enqueue.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REF_TEXT, corpus_path, print_table, write_results
from tests.services import RedisServer


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS of the largest process and of the whole tree (MB), and stderr."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    peak_one = peak_tree = 0.0
    while process.poll() is None:
        try:
            sizes = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
        except psutil.Error:
            sizes = []
        if sizes:
            peak_one, peak_tree = max(peak_one, max(sizes) / 2**20), max(peak_tree, sum(sizes) / 2**20)
        time.sleep(0.02)
    _, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(stderr[-2000:])
    return time.perf_counter() - start, peak_one, peak_tree, stderr


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="f5bench-enqueue-"))
    redis = RedisServer(work / "redis").start()
    cli = str(Path(sys.executable).with_name("f5-batch"))
    env = {**__import__("os").environ, "BROKER_URL": redis.url, "STORAGE_URL": f"file://{work / 'store'}",
           "F5_QUEUE": "bench"}
    ref = str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))
    subprocess.run([cli, "voice", "add", "narrador", ref, "--text", REF_TEXT], env=env, check=True,
                   capture_output=True)
    corpus = corpus_path()
    rows = []
    try:
        for batch in (8, 1):
            redis.client().flushdb()
            book = f"quijote-b{batch}"
            wall, peak_one, peak_tree, _ = _run(
                [cli, "enqueue", str(corpus), "--book", book, "--voice", "narrador", "--batch-size", str(batch),
                 "--max-queued", "1000000", "--manifest-dir", str(work / "manifests")], env)
            segments = sum(1 for _ in (work / "manifests" / f"{book}.jsonl").open())
            messages = redis.client().llen("bench")
            rows.append({"batch_size": batch, "segments": segments, "messages": messages, "wall_s": round(wall, 2),
                         "segments_per_s": round(segments / wall), "peak_rss_mb": round(peak_one, 1),
                         "peak_rss_tree_mb": round(peak_tree, 1), "corpus_mb": round(corpus.stat().st_size / 2**20, 2)})
    finally:
        redis.stop()
    print_table(rows, list(rows[0]))
    path = write_results("enqueue", {"corpus": corpus.name, "rows": rows,
                                     "targets": {"wall_s": 10, "peak_rss_mb": 200},
                                     "note": "wall includes CLI start-up; peak_rss_tree sums the CLI and its "
                                             "publisher process"})
    print(f"\nwrote {path}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""The long soak: many tiny jobs (from an interrupted enqueue, resume and the gateway) through a worker whose engine
process (and now and then the whole worker) is SIGKILLed at random; every execution is counted from the S3 endpoint's
request log (PUTs per key), so a job run twice shows. Writes bench/results/faults.json.

    F5_CORPUS=path/to/don-quijote.es.txt python bench/bench_soak.py --jobs 600   # the shipped excerpt is too short
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import corpus_path, write_results
from tests.faults.soak import run_soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between SIGKILLs")
    args = parser.parse_args()

    from worker.engine.engine import Engine
    from worker.engine.loading import packaged_vocab
    from worker.engine.presets import load_preset
    from worker.engine.random_weights import write_random_files
    from worker.settings import EngineSettings

    work = Path(tempfile.mkdtemp(prefix="f5soak-"))
    weights = work / "weights"
    write_random_files(load_preset("tiny-random"), packaged_vocab(), weights)
    engine = Engine.build(EngineSettings(model="tiny-random", random_cache_dir=str(weights), device="cpu",
                                         compile=False))
    ref = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))
    report = run_soak(args.jobs, work, weights, corpus_path(), ref, engine, kill_every_s=args.kill_every,
                      timeout_s=7200)
    print(report)
    path = write_results("faults", {"soak": report.as_dict(), "setup": {
        "worker": "celery -A worker worker (default: threads pool, one engine process; tiny-random, CPU, nfe 2)",
        "kills": "SIGKILL every 0.5..1.5x --kill-every seconds until 90% stored: the engine process, or (one kill in "
                 "five, and the second) the whole worker, which is started again",
        "duplicates": "PUTs per key in the S3 endpoint's request log beyond the first",
        "broker": "redis-server with AOF", "storage": "moto S3 server over HTTP",
        "producer": "f5-batch enqueue --batch-size 1, interrupted with SIGINT at half the book; the rest by "
                    "f5-batch resume once the worker runs; a tenth as many jobs again through the gateway's /v1/jobs"}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

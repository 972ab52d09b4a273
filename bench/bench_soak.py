"""The long soak: 2,000 tiny jobs over a two-process worker with random SIGKILLs; writes bench/results/faults.json.

    python bench/bench_soak.py --jobs 2000
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
    parser.add_argument("--jobs", type=int, default=2000)
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
        "worker": "celery -A worker worker -P prefork -c 2 (tiny-random, CPU, nfe 2)",
        "kills": "SIGKILL of a random pool process every 0.5..2x --kill-every seconds until 90% stored",
        "broker": "redis-server with AOF", "storage": "local folder", "producer": "f5-batch enqueue --batch-size 1"}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

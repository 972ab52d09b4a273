"""The long engine matrix, for a GPU machine with time for several device calls: upstream against this engine, on the
same random-weight model and the same Quijote segments. ``bench/gpu/run`` installs what the machine lacks and calls
this (``bench/gpu/run --quick`` is the one-call alternative, ``quick.py``).

What it measures (each row: RTF, audio seconds per second, MFU, peak VRAM allocated and reserved, warm-up time):

- part 1: upstream (``chunk_text`` + ``infer_batch_process``, which is ``infer_process`` minus its ``torchaudio.load``)
  in fp32 eager and at its fp16 defaults (the whole model cast to fp16), one segment at a time; this engine eager in
  bf16, fp16 and fp32;
- part 2: this engine compiled (``torch.compile``, dynamic shapes, every path warmed) in bf16 and fp16;
- part 3: this engine compiled in fp32; then a steady run through the worker's engine process (the serving path:
  scheduler, prepare and finish threads, the pipe), with GPU utilisation sampled through NVML, rows per pass, fill,
  and the engine's idle time between passes.

Every engine row runs each batch size (``--batches``) at each NFE (``--nfe``). A part stops starting new rows when its
time budget (``--budget-s``, under the 10 minutes one device call may take) would be overrun, and lists what it
skipped. Each part's file is rewritten after every row (``complete: false`` until the part ends), so a part cut off
at the device call's limit still returns its rows. FLOPs per row and forward (the DiT's matmuls and attention):
``16·d²·L·T + 4·T²·d·L`` (T: the row's real frames), ×2 with CFG, ×NFE; MFU is against the dense bf16 peak.

    python bench/gpu/matrix.py --part 1 --out DIR          # one part (GPU: full F5TTS_v1_Base architecture)
    python bench/gpu/matrix.py --merge DIR                 # DIR/engine-*-part*.json -> DIR/engine-gpu.json + table
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import measure
import rows
from measure import REPO, Ref, cuda, half_precision
from record import Results, table

from worker.engine.engine import Engine

# ------------------------------------------------------------------------------------------------ rows


def upstream_rows(results: Results, engine: Engine, texts: list[str], nfes: list[int]) -> None:
    """Upstream's own inference, one segment per call, at fp32 and (on CUDA) its fp16 defaults, at each NFE."""
    for precision in ["fp32"] + (["fp16"] if cuda() else []):
        model = rows.upstream_model(engine, precision)
        for nfe in nfes:
            estimate = results.notes.get("upstream_s_per_segment", 2.0) * len(texts) * nfe / 16
            if not results.affordable(f"upstream {precision} nfe {nfe}", estimate):
                continue
            row = rows.measure_upstream(engine, model, texts, nfe, precision)
            results.notes["upstream_s_per_segment"] = row["wall_s"] / len(texts) * 16 / nfe
            results.add(row)
        del model
        measure.release()


def engine_rows(results: Results, engine: Engine, built: dict[str, Any], texts: list[str], args: Any) -> None:
    """Each batch size at each NFE: ``max(min_segments, 2·batch)`` segments in calls of ``batch`` requests (the
    planner packs each call into passes of one length bucket)."""
    key = ("s_per_frame", engine.precision, engine.compiled)
    for nfe in args.nfe:
        for batch in args.batches:
            calls = math.ceil(max(args.min_segments, 2 * batch) / batch)
            per_frame = results.notes.get(key)
            frames = sum(c.frames for i in range(batch * calls)
                         for c in engine.prepare(measure.request(texts[i % len(texts)], i, nfe)).chunks)
            estimate = 2 * per_frame * frames * nfe / 16 if per_frame else 10.0
            label = f"engine {engine.precision} compile={engine.compiled} batch {batch} nfe {nfe}"
            if not results.affordable(label, estimate):
                continue
            row = rows.measure_engine(engine, texts, batch, nfe, calls, **built)
            results.notes[key] = row["wall_s"] / row["frames"] * 16 / nfe
            results.add(row)


def engine_part(results: Results, model: dict[str, Any], variants: list[tuple[str, bool]], texts: list[str],
                args: Any) -> None:
    for precision, compiled in variants:
        warm_estimate = 240.0 if compiled and cuda() else 30.0
        if not results.affordable(f"engine {precision} compile={compiled} (build)", warm_estimate):
            continue
        engine, built = measure.build(model, precision, compiled)
        built.pop("warmup_shapes")
        print(f"engine {precision} compile={compiled}: {built}", flush=True)
        engine_rows(results, engine, built, texts, args)
        del engine
        measure.release()


# ------------------------------------------------------------------------------------------------ parts


def run_part(part: int, args: Any) -> Path:
    texts = measure.texts(args.segments)
    Ref.load()
    model = measure.model_files(args.arch, Path(args.cache))
    precisions = [p for p in args.precisions if cuda() or p != "fp16"]  # CPU autocast has no fp16
    path = Path(args.out) / f"engine-{'gpu' if cuda() else 'cpu'}-part{part}.json"

    def header() -> dict[str, Any]:
        return {"part": part, "arch": args.arch, "model_arch": model["arch"], "machine": measure.machine(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "peak_bf16_tflops": measure.peak_tflops()}

    results = Results(path, args.budget_s, header, started=time.time())
    results.write()
    if part == 1:
        base, _ = measure.build(model, "fp32", False)
        upstream_rows(results, base, texts[: args.upstream_segments], args.nfe)
        del base
        measure.release()
        engine_part(results, model, [(p, False) for p in precisions], texts, args)
    elif part == 2:
        engine_part(results, model, [(p, True) for p in precisions if p != "fp32"], texts, args)
    else:
        if "fp32" in precisions:
            engine_part(results, model, [("fp32", True)], texts, args)
        if results.affordable("steady serving run", args.steady_s + (300 if cuda() else 60)):
            results.add(rows.steady_run(model, texts, args.nfe[0], half_precision(), args.compile_steady,
                                        args.in_flight, 900, lambda: args.steady_s))
    results.finish()
    print(f"wrote {path} ({results.elapsed():.1f} s, {len(results.rows)} rows, {len(results.skipped)} skipped)")
    return path


def merge(folder: Path, name: str) -> Path:
    """Every part found in ``folder`` into one JSON file and one table, with speed-ups against upstream fp32 at the
    same NFE."""
    parts = [json.loads(p.read_text()) for p in sorted(folder.glob("engine-*-part*.json"))]
    if not parts:
        raise SystemExit(f"no engine-*-part*.json in {folder}")
    measured = [row for part in parts for row in part["rows"]]
    upstream = {r["nfe_step"]: r["audio_s_per_s"] for r in measured
                if r["mode"] == "upstream" and r["precision"] == "fp32"}
    for row in measured:
        base = upstream.get(row.get("nfe_step"))
        row["vs_upstream"] = round(row["audio_s_per_s"] / base, 2) if base else None
    merged = {"benchmark": "engine-gpu", "machine": parts[0]["machine"], "arch": parts[0]["arch"],
              "model_arch": parts[0]["model_arch"],
              "parts": [{k: p.get(k) for k in ("part", "when", "elapsed_s", "budget_s", "complete", "skipped")}
                        for p in parts],
              "note": "random weights (speed does not depend on them); upstream = chunk_text + infer_batch_process, "
                      "one segment per call; MFU against the dense bf16 peak", "rows": measured}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(merged, indent=2) + "\n")
    text = table(measured)
    (folder / f"{name}.txt").write_text(text)
    print(text)
    print(f"wrote {path}")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    gpu = cuda()
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", help="1, 2, 3 or all")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--merge", metavar="DIR", help="only merge the parts found in DIR")
    parser.add_argument("--name", default="engine-gpu" if gpu else "engine-gpu-on-cpu",
                        help="base name of the merged file")
    parser.add_argument("--arch", choices=measure.ARCHES, default="full" if gpu else "mid")
    parser.add_argument("--precisions", type=lambda s: s.split(","),  # a CPU emulates bf16 slowly: a dry run skips it
                        default=["bf16", "fp16", "fp32"] if gpu else ["fp32"])
    parser.add_argument("--batches", type=ints, default=[1, 2, 4, 8, 16, 32, 64] if gpu else [1, 8])
    parser.add_argument("--nfe", type=ints, default=[16, 32] if gpu else [16])
    parser.add_argument("--segments", type=int, default=128)
    parser.add_argument("--min-segments", type=int, default=16 if gpu else 8)
    parser.add_argument("--upstream-segments", type=int, default=16 if gpu else 8)
    parser.add_argument("--steady-s", type=float, default=60.0 if gpu else 20.0)
    parser.add_argument("--in-flight", type=int, default=128 if gpu else 16)
    parser.add_argument("--compile-steady", type=lambda s: s.lower() in ("1", "true", "on"), default=gpu,
                        help="compile the steady run's engine (default: on CUDA, as a deployed worker does)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall seconds one part may take")
    parser.add_argument("--cache", help="folder for the random checkpoint (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.part not in ("1", "2", "3", "all"):
        parser.error("--part is 1, 2, 3 or all")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bench.gpu").setLevel(logging.INFO)
    args = parse_args(argv)
    if args.merge:
        merge(Path(args.merge), args.name)
        return
    parts = [1, 2, 3] if args.part == "all" else [int(args.part)]
    if args.cache is None:
        args.cache = tempfile.mkdtemp(prefix="f5-gpu-bench-")  # one random checkpoint for every part of this run
    for part in parts:
        run_part(part, args)
    merge(Path(args.out), args.name)


if __name__ == "__main__":
    main()

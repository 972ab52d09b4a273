"""``bench/gpu/run --quick``: the GPU proof in one device call of at most 8 minutes, install and compile included.

Rows, in this order (each is measured, or listed as skipped with its reason):

1. ``engine-compiled``: this engine compiled (bf16 on a GPU; fp32 on a CPU) at the working batch, on the full
   F5TTS_v1_Base architecture with random weights: RTF, audio-s/s, MFU, peak VRAM, build, warm-up and compile time,
   graphs compiled after warm-up (``recompiles``), and an estimate of the full warm-up;
2. ``upstream-fp16`` and ``upstream-fp32``: upstream (``chunk_text`` + ``infer_batch_process``) at its fp16 defaults
   and in fp32 eager, one segment per call, on the first of the same segments;
3. ``engine-fp32``: this engine in fp32 (eager) at the working batch: peak VRAM and parameter bytes against row 1;
4. ``serving``: a steady run (60 s on a GPU) through a spawned engine process under a deep queue, as the worker
   serves: NVML utilisation, rows per pass, fill, and the engine's idle time between passes;
5. with whatever time is left: NFE 32, other batch sizes, upstream at NFE 32, fp16 compiled.

The working batch: the segments whose every chunk falls in one length bucket (on a GPU the bucket that holds most
chunks), so that each pass carries the engine's widest batch (64 rows on a GPU); warm-up covers only the buckets a
row serves (``Engine.warm_up(buckets=...)``), and the full warm-up is estimated from the measured shapes. The results
file is rewritten after every row (``complete: false`` until the end), and a row that would overrun the budget, which
counts from the moment ``bench/gpu/run`` started, is skipped with its estimate.

    bench/gpu/run --quick                  # GPU: full architecture; CPU: the mid-size DiT (a dry run)
    bench/gpu/run --quick --arch tiny --no-compile --steady-s 2     # seconds: what the shape test runs
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import measure
import rows
from measure import REPO, Ref, cuda, half_precision, request
from record import Results, log
from warmup import full_warmup_estimate

from worker.engine.engine import Engine

PLAN = [("engine-compiled", 1), ("upstream-fp16", 2), ("upstream-fp32", 2), ("engine-fp32", 3), ("serving", 4)]
NOTE = ("random weights (speed does not depend on them); upstream = chunk_text + infer_batch_process, one segment per "
        "call; MFU against the dense bf16 peak; the inductor and Triton caches start empty (bench/gpu/run), so "
        "compile times are cold; the full warm-up is an estimate from the measured shapes")


def buckets_of(engine: Engine, text: str, seed: int, nfe: int) -> list[int]:
    """The length bucket of each chunk of one segment."""
    return [engine.planner.bucket_frames(chunk.frames) for chunk in engine.prepare(request(text, seed, nfe)).chunks]


def working_set(engine: Engine, texts: Sequence[str], nfe: int, choice: str, batch: int) -> tuple[int, list[str]]:
    """The bucket a row serves and its segments: those spoken in one chunk of that bucket, so that a call of
    ``batch`` of them is one pass of ``batch`` rows. ``modal``: the bucket holding the most chunks; ``short``: the
    shortest bucket with at least ``batch`` such segments (a CPU's choice: its passes are slow)."""
    per_text = [buckets_of(engine, t, i, nfe) for i, t in enumerate(texts)]
    chunks = Counter(b for buckets in per_text for b in buckets)
    alone = Counter(buckets[0] for buckets in per_text if len(buckets) == 1)
    if choice == "modal":
        bucket = max(alone, key=lambda b: (chunks[b], b))
    else:
        bucket = min((b for b in alone if alone[b] >= batch), default=max(alone, key=alone.__getitem__))
    return bucket, [t for t, buckets in zip(texts, per_text, strict=True) if buckets == [bucket]]


class QuickRun:
    """One quick run: the rows in their order, each checked against the time left before it starts."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.half = half_precision() if args.precision == "auto" else args.precision
        out = Path(args.out)
        self.results = Results(out / f"{args.name}.json", args.budget_s, self.header, summary)
        self.settings = {k: v for k, v in vars(args).items() if k not in ("out", "cache")}
        self.model: dict[str, Any] = {}
        self.engine: Engine | None = None  # row 1's engine, kept for the extras
        self.fp32: Engine | None = None  # row 2's and 3's, kept for upstream at NFE 32
        self.bucket = 0
        self.segments: list[str] = []
        self.batch = 0
        self.cost: dict[str, float] = {}  # measured seconds that later estimates scale

    def header(self) -> dict[str, Any]:
        return {"benchmark": self.args.name, "mode": "quick",
                "order": [{"id": i, "step": s} for i, s in PLAN] + [{"id": "extras", "step": 5}],
                "machine": measure.machine(), "arch": self.args.arch, "model_arch": self.model.get("arch"),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": self.settings,
                "bucket": self.bucket or None, "working_batch": self.batch or None, "note": NOTE,
                "peak_bf16_tflops": measure.peak_tflops(), "load_average": [round(x, 2) for x in os.getloadavg()],
                **{k: v for k, v in self.cost.items() if k == "startup_s"}}

    @contextlib.contextmanager
    def row(self, row_id: str, step: int, label: str, estimate_s: float | None) -> Iterator[dict[str, Any]]:
        """Run one row if it fits (``estimate_s`` None: always); its failure is recorded, and the run goes on."""
        planned = {"id": row_id, "step": step}
        if estimate_s is not None and not self.results.affordable(label, estimate_s, **planned):
            yield {"skip": True}
            return
        began = time.time()
        holder: dict[str, Any] = {}
        try:
            yield holder
        except Exception as exc:
            log.exception("%s failed", label)
            self.results.skip(label, f"failed: {type(exc).__name__}: {str(exc)[:300]}", **planned)
            return
        if "row" in holder:
            self.results.add({**planned, "label": label, **holder["row"], "spent_s": round(time.time() - began, 1),
                              "at_s": round(self.results.elapsed(), 1), "load_1m": round(os.getloadavg()[0], 2)})

    def run(self) -> Path:
        results, args = self.results, self.args
        results.write()
        cache = Path(args.cache or tempfile.mkdtemp(prefix="f5-gpu-quick-"))
        self.model = measure.model_files(args.arch, cache)
        Ref.load()
        self.cost["startup_s"] = round(results.elapsed(), 1)  # install, imports, the random checkpoint
        self.row_engine_compiled()
        self.row_upstream()
        self.row_engine_fp32()
        self.row_serving()
        self.extras()
        return results.finish()

    # -------------------------------------------------------------------------------------------- rows 1-4

    def row_engine_compiled(self) -> None:
        args = self.args
        label = f"engine {self.half} compile={args.compile} at the working batch, nfe {args.nfe}"
        with self.row("engine-compiled", 1, label, None) as holder:
            engine, built_s = measure.build_engine(self.model, self.half, args.compile, max_batch=args.max_batch)
            self.engine = engine
            self.batch = engine.planner.max_batch
            self.bucket, self.segments = working_set(engine, measure.texts(), args.nfe, args.bucket, self.batch)
            self.batch = max(1, min(engine.planner.max_batch, engine.planner.frame_budget // self.bucket))
            warmed = measure.warm(engine, [self.bucket])
            estimate = full_warmup_estimate(engine, warmed)
            row = rows.measure_engine(engine, self.segments, self.batch, args.nfe, args.calls, bucket=self.bucket,
                                      build_s=round(built_s, 1), **warmed, full_warmup=estimate)
            self.cost["engine_s_per_frame_step"] = row["wall_s"] / (row["frames"] * args.nfe)
            self.cost["engine_build_s"] = built_s + warmed["warmup_s"]
            holder["row"] = row

    def frames(self, count: int, nfe: int) -> int:
        """Mel frames of the first ``count`` working segments (cycled), for the estimates."""
        assert self.engine is not None
        return sum(c.frames for i in range(count)
                   for c in self.engine.prepare(request(self.segments[i % len(self.segments)], i, nfe)).chunks)

    def engine_estimate(self, count: int, nfe: int, factor: float) -> float:
        """Seconds for ``count`` segments at ``nfe`` at ``factor`` times row 1's measured cost per frame-step."""
        per = self.cost.get("engine_s_per_frame_step")
        if per is None or self.engine is None:
            return float("inf")
        return per * factor * self.frames(count, nfe) * nfe

    def fp32_engine(self) -> Engine:
        if self.fp32 is None:
            self.fp32, _ = measure.build(self.model, "fp32", False, max_batch=self.args.max_batch)
        return self.fp32

    def row_upstream(self, nfe: int | None = None, step: int = 2) -> None:
        args = self.args
        nfe = nfe or args.nfe
        segments = self.segments[: args.upstream_segments]
        for precision, factor in (("fp16", 4.0), ("fp32", 8.0 if cuda() else 1.5)):
            row_id = f"upstream-{precision}" + ("" if nfe == args.nfe else f"-nfe{nfe}")
            label = f"upstream {precision} batch 1 nfe {nfe}"
            if precision == "fp16" and not cuda():
                self.results.skip(label, "upstream's fp16 default is for CUDA GPUs; on a CPU it runs fp32 (the next "
                                  "row)", id=row_id, step=step)
                continue
            measured = self.cost.get(f"upstream_{precision}_s")
            estimate = (measured * nfe / args.nfe * (len(segments) + 1) / len(segments) if measured else
                        self.engine_estimate(len(segments) + 1, nfe, factor) + 10)
            if precision == "fp32" and "upstream_fp16_s" in self.cost and not measured:
                estimate = self.cost["upstream_fp16_s"] * 2.5 * nfe / args.nfe + 10
            with self.row(row_id, step, label, estimate) as holder:
                if holder.get("skip"):
                    continue
                engine = self.fp32_engine()
                model = rows.upstream_model(engine, precision)
                holder["row"] = rows.measure_upstream(engine, model, segments, nfe, precision)
                del model
                measure.release()
                if nfe == args.nfe:
                    self.cost[f"upstream_{precision}_s"] = holder["row"]["wall_s"]

    def row_engine_fp32(self) -> None:
        args = self.args
        label = f"engine fp32 eager at the working batch, nfe {args.nfe}"
        count = self.batch * 2  # one call measured, after one uncounted: memory is what this row is for
        with self.row("engine-fp32", 3, label, self.engine_estimate(count, args.nfe, 6.0 if cuda() else 1.5) + 15) \
                as holder:
            if holder.get("skip"):
                return
            engine = self.fp32_engine()
            holder["row"] = rows.measure_engine(engine, self.segments, self.batch, args.nfe, 1, bucket=self.bucket,
                                                parameter_mb=self.parameter_mb(engine))

    @staticmethod
    def parameter_mb(engine: Engine) -> dict[str, float]:
        return {k: round(v / 1e6, 1) for k, v in engine.parameter_bytes().items()}

    def row_serving(self) -> None:
        args, results = self.args, self.results
        texts = measure.texts() if args.steady_segments == "all" else self.segments
        compiled = args.compile and cuda()  # as deployed: a CPU worker runs eager (ENABLE_TORCH_COMPILE's default)
        start_s = (0.6 * self.cost.get("engine_build_s", 120.0) if compiled else 15.0) + 20.0
        ramp = min(10.0, args.steady_s / 6)
        window = min(args.steady_s, 20.0)
        label = f"serving {args.steady_s:.0f} s, {args.in_flight} in flight"
        with self.row("serving", 4, label, start_s + ramp + window + 10) as holder:
            if holder.get("skip"):
                return
            if self.engine is not None:
                measure.release()  # what row 1's engine has cached goes back to the device for the child
            engine = self.engine
            buckets = sorted({b for i, t in enumerate(texts) for b in buckets_of(engine, t, i, args.nfe)}) \
                if engine else None
            config = {"frame_buckets": tuple(buckets), "frame_budget": engine.planner.frame_budget} \
                if engine is not None and buckets is not None else {}

            def seconds_for() -> float:  # once the engine is warm: the full window, or what is left of the budget
                return max(5.0, min(args.steady_s, results.time_left() - ramp - 10))

            row = rows.steady_run(self.model, texts, args.nfe, self.half, compiled, args.in_flight,
                                  max(30.0, results.time_left() - ramp - window), seconds_for,
                                  max_batch=args.max_batch, **config)
            row["window_cut"] = row["seconds"] < args.steady_s - 1
            holder["row"] = row

    # -------------------------------------------------------------------------------------------- row 5

    def extras(self) -> None:
        """What the matrix measures beyond the headline, cheapest first, each only if it still fits."""
        args = self.args
        if self.engine is None:
            self.results.skip("extras", "row 1 did not build an engine")
            return
        count = self.batch * (args.calls + 1)
        nfe = args.extra_nfe
        self.engine_extra(f"engine-nfe{nfe}", f"engine {self.half} compile={args.compile}, working batch, nfe {nfe}",
                          self.engine, self.batch, nfe, self.engine_estimate(count, nfe, 1.3))
        for batch in [b for b in args.extra_batches if b < self.batch]:
            calls = max(1, (self.batch * args.calls) // batch // 4)
            factor = 1.3 + 3.0 * (1 - batch / self.batch) if cuda() else 1.3
            self.engine_extra(f"engine-batch{batch}", f"engine {self.half} compile={args.compile}, batch {batch}",
                              self.engine,
                              batch, args.nfe, self.engine_estimate(batch * (calls + 1), args.nfe, factor), calls)
        if self.segments:
            self.row_upstream(nfe=nfe, step=5)
        if cuda() and self.half != "fp16":
            self.fp16_compiled()

    def engine_extra(self, row_id: str, label: str, engine: Engine, batch: int, nfe: int, estimate: float,
                     calls: int | None = None) -> None:
        with self.row(row_id, 5, label, estimate) as holder:
            if not holder.get("skip"):
                holder["row"] = rows.measure_engine(engine, self.segments, batch, nfe, calls or self.args.calls,
                                                    bucket=self.bucket)

    def fp16_compiled(self) -> None:
        args = self.args
        estimate = self.cost.get("engine_build_s", 300.0) + self.engine_estimate(self.batch * 2, args.nfe, 1.2)
        with self.row("engine-fp16-compiled", 5, "engine fp16 compiled at the working batch", estimate) as holder:
            if holder.get("skip"):
                return
            self.engine = None
            measure.release()
            engine, built = measure.build(self.model, "fp16", True, [self.bucket], max_batch=args.max_batch)
            holder["row"] = rows.measure_engine(engine, self.segments, self.batch, args.nfe, 1, bucket=self.bucket,
                                                **built)


def summary(done: list[dict[str, Any]]) -> dict[str, Any]:
    """What the rows so far say, against the design's targets (recomputed at every write)."""
    by_id = {r["id"]: r for r in done if r.get("status") == "measured"}
    head, fp32, serving = by_id.get("engine-compiled"), by_id.get("engine-fp32"), by_id.get("serving")
    out: dict[str, Any] = {"spent_s": {r["id"]: r.get("spent_s") for r in done if r.get("status") == "measured"}}
    if head:
        out["headline"] = {k: head.get(k) for k in ("precision", "batch", "nfe_step", "rtf", "audio_s_per_s", "mfu",
                                                    "peak_allocated_gb", "warmup_s", "compile_s", "recompiles")}
        out["headline"]["full_warmup_estimate_s"] = (head.get("full_warmup") or {}).get("seconds")
        out["rtf_target_0.01_met"] = head["rtf"] <= 0.01
        for up in ("upstream-fp16", "upstream-fp32"):
            if up in by_id:
                out[f"speedup_vs_{up}"] = round(head["audio_s_per_s"] / by_id[up]["audio_s_per_s"], 2)
    if head and fp32:
        if head.get("peak_allocated_gb") and fp32.get("peak_allocated_gb"):
            out["vram_ratio_fp32_over_row1"] = round(fp32["peak_allocated_gb"] / head["peak_allocated_gb"], 2)
        dit_row1, dit_fp32 = (head.get("parameter_mb") or {}).get("dit"), (fp32.get("parameter_mb") or {}).get("dit")
        if dit_row1 and dit_fp32:
            out["dit_parameter_ratio_fp32_over_row1"] = round(dit_fp32 / dit_row1, 2)
    if serving:
        out["serving"] = {k: serving.get(k) for k in ("rows_per_pass", "idle_over_busy", "gpu_util_mean",
                                                      "audio_s_per_s", "recompiles")}
        out["rows_per_pass_target_8_met"] = (serving.get("rows_per_pass") or 0) >= 8
        out["idle_target_5pct_met"] = serving.get("idle_over_busy") is not None and serving["idle_over_busy"] <= 0.05
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    gpu = cuda()
    ints: Callable[[str], list[int]] = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--name", default="engine-gpu-quick" if gpu else "engine-gpu-quick-on-cpu")
    parser.add_argument("--arch", choices=measure.ARCHES, default="full" if gpu else "mid")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall seconds from bench/gpu/run's start (install included); 30 s under 8 minutes")
    parser.add_argument("--precision", default="auto", help="row 1's: auto is bf16 (fp16 before Ampere), CPU fp32")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="compile row 1's engine (and the serving run's, on a GPU)")
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=64 if gpu else 4, help="the widest pass (rows)")
    parser.add_argument("--bucket", choices=["modal", "short"], default="modal" if gpu else "short",
                        help="the working set's length bucket: the commonest, or the shortest that fills a pass")
    parser.add_argument("--calls", type=int, default=2 if gpu else 1, help="measured calls of one working batch")
    parser.add_argument("--upstream-segments", type=int, default=16 if gpu else 2)
    parser.add_argument("--steady-s", type=float, default=60.0 if gpu else 20.0)
    parser.add_argument("--steady-segments", choices=["all", "working"], default="all" if gpu else "working",
                        help="what the serving run sends: all 128 segments (mixed lengths) or the working set "
                             "(a CPU's default: its passes over all lengths outlast a 20 s window)")
    parser.add_argument("--in-flight", type=int, default=128 if gpu else 16)
    parser.add_argument("--extra-nfe", type=int, default=32, help="the extras' second step count")
    parser.add_argument("--extra-batches", type=ints, default=[1, 8, 16, 32] if gpu else [1, 2])
    parser.add_argument("--threads", type=int, default=0 if gpu else 1,
                        help="torch CPU threads, here and in the serving run's engine process (0: torch's default). "
                             "A CPU's default is 1: on a 2-core machine shared with other work the engine's eager "
                             "passes ran 4x slower at 2 threads than at 1, upstream's did not")
    parser.add_argument("--cache", help="folder for the random checkpoint (default: a temporary folder)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bench.gpu").setLevel(logging.INFO)
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the serving run's spawned engine process inherits it
    run = QuickRun(args)
    path = run.run()
    from record import table

    print(table([r for r in run.results.rows if r.get("status") == "measured"]))
    print(f"wrote {path} ({run.results.elapsed():.0f} s, {len(run.results.skipped)} skipped)")


if __name__ == "__main__":
    main()

"""The engine matrix, for one bare GPU machine: upstream against this engine, on the same random-weight model and the
same Quijote segments, in one run. ``bench/gpu/run`` installs what the machine lacks and calls this.

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
skipped. FLOPs per row and forward (the DiT's matmuls and attention): ``16·d²·L·T + 4·T²·d·L`` (T: the row's real
frames), ×2 with CFG, ×NFE; MFU is against the dense bf16 peak of the GPU.

    python bench/gpu/matrix.py --part 1 --out DIR          # one part (GPU: full F5TTS_v1_Base architecture)
    python bench/gpu/matrix.py --merge DIR                 # DIR/engine-*-part*.json -> DIR/engine-gpu.json + table
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from importlib import metadata
from importlib.resources import files
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

from worker.contract import JobParams  # noqa: E402
from worker.engine.config import EngineConfig  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.engine.loading import packaged_vocab  # noqa: E402
from worker.engine.presets import TINY_ARCH, load_preset, random_variant  # noqa: E402
from worker.engine.random_weights import write_random_files  # noqa: E402
from worker.engine.types import SynthesisRequest, VoiceInput  # noqa: E402

log = logging.getLogger("bench.gpu")

REF_TEXT = "Some call me nature, others call me mother nature."
MID_ARCH = {**TINY_ARCH, "dim": 192, "depth": 4, "heads": 3, "dim_head": 64, "text_dim": 96, "conv_layers": 2}
DENSE_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.0, "L40": 181.0,
                     "L20": 119.5, "A10": 125.0, "L4": 121.0}
SEGMENTS = Path(__file__).with_name("segments.json")


# ------------------------------------------------------------------------------------------------ set-up


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "device": device_name()}
    for package in ("torch", "torchaudio", "triton", "f5-tts", "vocos", "x-transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


def model_files(arch_name: str, cache: Path) -> dict[str, str]:
    """The F5TTS_v1_Base architecture (or the mid-size CPU stand-in) with deterministic random weights, written as a
    real checkpoint, vocos folder and upstream-style YAML, so the engine loads it through its normal path (also in a
    spawned engine process)."""
    preset = random_variant(load_preset("F5TTS_v1_Base"), vocoder_size="full")
    if arch_name == "mid":
        preset = replace(preset, name="mid-random", arch=dict(MID_ARCH))
    ckpt, vocoder = write_random_files(preset, packaged_vocab(), cache)
    config = cache / f"{preset.name}.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": preset.backbone, "arch": preset.arch,
                                                "mel_spec": preset.mel_spec}}))
    return {"model": str(config), "ckpt_file": str(ckpt), "vocoder_path": str(vocoder), "arch": preset.arch}


def engine_config(model: dict, precision: str, compiled: bool, **extra) -> EngineConfig:
    return EngineConfig(model=model["model"], ckpt_file=model["ckpt_file"], vocoder_path=model["vocoder_path"],
                        precision=precision, compile=compiled, **extra)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ counting


def useful_flops(arch: dict, frames: list[int], nfe: int, cfg: bool = True) -> float:
    """FLOPs of the DiT's useful work: per row and forward 16·d²·L·T (projections, MLP) + 4·T²·d·L (attention)."""
    d, layers = arch["dim"], arch["depth"]
    per_forward = sum(16 * d * d * layers * t + 4 * t * t * d * layers for t in frames)
    return per_forward * (2 if cfg else 1) * nfe


def peak_tflops() -> float | None:
    name = device_name()
    return next((value for key, value in DENSE_BF16_TFLOPS.items() if key in name), None)


class Matrix:
    """Rows of one part, with the part's time budget."""

    def __init__(self, part: int, arch: str, budget_s: float) -> None:
        self.part = part
        self.arch = arch
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.notes: dict = {}

    def time_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def affordable(self, label: str, estimate_s: float) -> bool:
        if estimate_s <= self.time_left():
            return True
        self.skipped.append(label)
        log.warning("skipped %s: about %.0f s needed, %.0f s left in part %d", label, estimate_s, self.time_left(),
                    self.part)
        return False

    def add(self, row: dict) -> None:
        self.rows.append(row)
        shown = {k: row.get(k) for k in ("mode", "precision", "compile", "batch", "nfe_step", "rtf", "mfu",
                                         "peak_allocated_gb")}
        print("  " + "  ".join(f"{k}={v}" for k, v in shown.items()), flush=True)


def timed_row(mode: str, precision: str, compiled: bool, batch: int, nfe: int, audio_s: float, wall: float,
              flops: float, **extra) -> dict:
    peak = peak_tflops()
    achieved = flops / wall / 1e12
    return {"mode": mode, "precision": precision, "compile": compiled, "batch": batch, "nfe_step": nfe,
            "audio_s": round(audio_s, 2), "wall_s": round(wall, 3), "rtf": round(wall / audio_s, 5),
            "audio_s_per_s": round(audio_s / wall, 2), "tflops": round(achieved, 2),
            "mfu": round(achieved / peak, 4) if peak else None, **peak_memory(), **extra}


# ------------------------------------------------------------------------------------------------ upstream


def upstream_rows(matrix: Matrix, engine: Engine, texts: list[str], nfes: list[int], ref_path: str) -> None:
    """Upstream's own inference, one segment per call, as ``infer_process`` runs it (its text chunking, then
    ``infer_batch_process``); the reference is read with soundfile, because ``torchaudio.load`` needs torchcodec and
    FFmpeg, which a bare machine lacks. fp16: upstream's default on GPUs of compute capability ≥ 7 (model cast)."""
    import f5_tts.infer.utils_infer as upstream
    import soundfile as sf

    samples, rate = sf.read(ref_path, dtype="float32", always_2d=True)
    audio = torch.from_numpy(samples.T.copy())
    ref_text = REF_TEXT + " "  # upstream's preprocessing ends the transcript with a space
    ref_s = audio.shape[-1] / rate
    max_chars = int(len(ref_text.encode("utf-8")) / ref_s * (22 - ref_s))
    variants = [("fp32", engine.model)]
    if torch.cuda.is_available():
        variants.append(("fp16", copy.deepcopy(engine.model).half()))
    frames = [sum(c.frames for c in engine.prepare(_request(t, 0, nfes[0])).chunks) for t in texts]
    for precision, model in variants:
        for nfe in nfes:
            estimate = matrix.notes.get("upstream_s_per_segment", 2.0) * len(texts) * nfe / 16
            if not matrix.affordable(f"upstream {precision} nfe {nfe}", estimate):
                continue

            def run(segments: list[str], model=model, nfe=nfe) -> float:
                produced = 0.0
                for seed, text in enumerate(segments):
                    torch.manual_seed(seed)
                    wave, _, _ = next(upstream.infer_batch_process(
                        (audio, rate), ref_text, upstream.chunk_text(text, max_chars=max_chars), model,
                        engine.vocoder, nfe_step=nfe, device=str(engine.device), progress=None))
                    produced += len(wave) / 24000
                return produced

            run(texts[:1])  # first call allocates and tunes; not counted
            reset_peak()
            start = time.perf_counter()
            audio_s = run(texts)
            sync()
            wall = time.perf_counter() - start
            matrix.notes["upstream_s_per_segment"] = wall / len(texts) * 16 / nfe
            matrix.add(timed_row("upstream", precision, False, 1, nfe, audio_s, wall,
                                 useful_flops(engine.preset.arch, frames, nfe)))
        del model
        release()


# ------------------------------------------------------------------------------------------------ this engine


def _request(text: str, seed: int, nfe: int) -> SynthesisRequest:
    voice = VoiceInput(_Ref.audio, REF_TEXT)
    return SynthesisRequest(text, voice, JobParams(nfe_step=nfe), seed=seed)


class _Ref:
    audio: bytes = b""


def build(model: dict, precision: str, compiled: bool, **extra) -> tuple[Engine, dict]:
    start = time.perf_counter()
    engine = Engine.build(engine_config(model, precision, compiled, **extra))
    report = engine.warm_up()
    return engine, {"build_s": round(time.perf_counter() - start - report.seconds, 1),
                    "warmup_s": round(report.seconds, 1), "graphs": report.graphs, "shapes": report.shapes,
                    "frame_budget": report.frame_budget,
                    "parameter_mb": {k: round(v / 1e6, 1) for k, v in report.parameter_bytes.items()}}


def engine_rows(matrix: Matrix, engine: Engine, built: dict, texts: list[str], batches: list[int],
                nfes: list[int], min_segments: int) -> None:
    """Each batch size at each NFE: ``max(min_segments, 2·batch)`` segments in calls of ``batch`` requests (the
    planner packs each call into passes of one length bucket)."""
    arch = engine.preset.arch
    for nfe in nfes:
        for batch in batches:
            count = max(min_segments, 2 * batch)
            chosen = [texts[i % len(texts)] for i in range(count)]
            requests = [_request(t, i, nfe) for i, t in enumerate(chosen)]
            frames = [c.frames for r in requests for c in engine.prepare(r).chunks]
            per_frame = matrix.notes.get(("s_per_frame", engine.precision, engine.compiled), None)
            estimate = 2 * per_frame * sum(frames) * nfe / 16 if per_frame else 10.0
            label = f"engine {engine.precision} compile={engine.compiled} batch {batch} nfe {nfe}"
            if not matrix.affordable(label, estimate):
                continue
            engine.synthesize(requests[:batch])  # this shape's first call: not counted
            reset_peak()
            start = time.perf_counter()
            outputs = []
            for i in range(0, len(requests), batch):
                outputs.extend(engine.synthesize(requests[i : i + batch]))
            sync()
            wall = time.perf_counter() - start
            failed = [o.error for o in outputs if not o.ok]
            if failed:
                raise RuntimeError(f"{len(failed)} segments failed: {failed[0]}")
            matrix.notes[("s_per_frame", engine.precision, engine.compiled)] = wall / sum(frames) * 16 / nfe
            matrix.add(timed_row("engine", engine.precision, engine.compiled, batch, nfe,
                                 sum(o.duration_s for o in outputs), wall, useful_flops(arch, frames, nfe),
                                 segments=count, **built))


def engine_part(matrix: Matrix, model: dict, variants: list[tuple[str, bool]], texts: list[str], args) -> None:
    for precision, compiled in variants:
        warm_estimate = 240.0 if compiled and torch.cuda.is_available() else 30.0
        if not matrix.affordable(f"engine {precision} compile={compiled} (build)", warm_estimate):
            continue
        engine, built = build(model, precision, compiled)
        print(f"engine {precision} compile={compiled}: {built}", flush=True)
        engine_rows(matrix, engine, built, texts, args.batches, args.nfe, args.min_segments)
        del engine
        release()


# ------------------------------------------------------------------------------------------------ steady serving


class UtilisationSampler:
    """GPU utilisation through NVML (the share of time a kernel was running), sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self.memory_used: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def __enter__(self) -> UtilisationSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        except Exception as exc:  # no NVML (a CPU run): utilisation is reported as unknown
            self.error = f"{type(exc).__name__}: {exc}"
            return self

        def sample() -> None:
            while not self._stop.wait(self.interval_s):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                self.memory_used.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "nvml": self.error}
        return {"gpu_util_mean": round(statistics.fmean(self.samples), 1),
                "gpu_util_median": statistics.median(self.samples), "gpu_util_samples": len(self.samples),
                "gpu_memory_used_gb_max": round(max(self.memory_used) / 2**30, 2)}


def steady_run(matrix: Matrix, model: dict, texts: list[str], seconds: float, nfe: int, precision: str,
               compiled: bool, in_flight: int) -> None:
    """The serving path under a deep queue: ``in_flight`` single-segment requests always outstanding (as the
    worker's task threads keep them), through one spawned engine process, for ``seconds``."""
    from worker.runtime.host import EngineHost

    passes: list[dict] = []
    config = engine_config(model, precision, compiled)
    host = EngineHost(config, [None], max_wait_s=config.batch_wait_ms / 1000, on_pass=passes.append)
    start = time.monotonic()
    host.start(timeout_s=900)
    warm_s = time.monotonic() - start
    info = host.info
    produced, lock, stop = [0.0, 0], threading.Lock(), threading.Event()

    def client(index: int) -> None:
        n = index
        while not stop.is_set():
            outputs = host.synthesize([_request(texts[n % len(texts)], n, nfe)], [f"steady-{n}"])
            with lock:
                produced[0] += outputs[0].duration_s
                produced[1] += 1
            n += in_flight

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(in_flight)]
    with UtilisationSampler() as sampler:
        for thread in threads:
            thread.start()
        time.sleep(min(10.0, seconds / 6))  # ramp: the queue fills
        with lock:
            audio0, jobs0, passes0 = produced[0], produced[1], len(passes)
        t0 = time.monotonic()
        sampler.samples.clear()
        time.sleep(seconds)
        with lock:
            audio, jobs = produced[0] - audio0, produced[1] - jobs0
        wall = time.monotonic() - t0
        window = passes[passes0:]
        stop.set()
    for thread in threads:
        thread.join(timeout=120)
    host.close()
    busy = sum(p["seconds"] for p in window)
    idle = sum(p["idle_s"] for p in window)
    padded = sum(p["rows"] * p["padded_frames"] for p in window)
    row = {"mode": "engine-serving", "precision": info["precision"], "compile": compiled, "nfe_step": nfe,
           "in_flight": in_flight, "seconds": round(wall, 1), "jobs": jobs, "audio_s": round(audio, 1),
           "audio_s_per_s": round(audio / wall, 2), "rtf": round(wall / audio, 5) if audio else None,
           "passes": len(window), "rows_per_pass": round(statistics.fmean(p["rows"] for p in window), 2)
           if window else None, "fill": round(sum(p["frames"] for p in window) / padded, 3) if padded else None,
           "idle_over_busy": round(idle / busy, 4) if busy else None,
           "recompiles": sum(p.get("recompiles", 0) for p in window), "warmup_s": round(warm_s, 1),
           "frame_budget": info["frame_budget"], **sampler.summary()}
    memory = [p["memory"] for p in window if p.get("memory")]
    if memory:
        row["peak_allocated_gb"] = round(max(m["peak"] for m in memory) / 2**30, 2)
        row["reserved_gb"] = round(max(m["reserved"] for m in memory) / 2**30, 2)
    matrix.add(row)


# ------------------------------------------------------------------------------------------------ parts


def run_part(part: int, args) -> Path:
    cuda = torch.cuda.is_available()
    matrix = Matrix(part, args.arch, args.budget_s)
    texts = json.loads(SEGMENTS.read_text(encoding="utf-8"))["segments"][: args.segments]
    ref_path = str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))
    _Ref.audio = Path(ref_path).read_bytes()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="f5-gpu-bench-"))
    model = model_files(args.arch, cache)
    half = "bf16" if not cuda or torch.cuda.get_device_capability(0) >= (8, 0) else "fp16"
    precisions = [p for p in args.precisions if cuda or p != "fp16"]  # CPU autocast has no fp16
    if part == 1:
        base, _ = build(model, "fp32", False)
        upstream_rows(matrix, base, texts[: args.upstream_segments], args.nfe, ref_path)
        del base
        release()
        engine_part(matrix, model, [(p, False) for p in precisions], texts, args)
    elif part == 2:
        engine_part(matrix, model, [(p, True) for p in precisions if p != "fp32"], texts, args)
    else:
        if "fp32" in precisions:
            engine_part(matrix, model, [("fp32", True)], texts, args)
        if matrix.affordable("steady serving run", args.steady_s + (300 if cuda else 60)):
            steady_run(matrix, model, texts, args.steady_s, args.nfe[0], half if cuda else "fp32", args.compile_steady,
                       args.in_flight)
    payload = {"part": part, "arch": args.arch, "model_arch": model["arch"], "machine": machine(),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": round(time.monotonic() -
                                                                                             matrix.started, 1),
               "budget_s": args.budget_s, "rows": matrix.rows, "skipped": matrix.skipped,
               "peak_bf16_tflops": peak_tflops()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"engine-{'gpu' if cuda else 'cpu'}-part{part}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path} ({payload['wall_s']} s, {len(matrix.rows)} rows, {len(matrix.skipped)} skipped)")
    return path


COLUMNS = ["mode", "precision", "compile", "batch", "nfe_step", "rtf", "audio_s_per_s", "vs_upstream", "mfu",
           "peak_allocated_gb", "peak_reserved_gb", "warmup_s", "rows_per_pass", "fill", "idle_over_busy",
           "gpu_util_mean"]


def table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


def merge(folder: Path, name: str) -> Path:
    """Every part found in ``folder`` into one JSON file and one table, with speed-ups against upstream fp32 at the
    same NFE."""
    parts = [json.loads(p.read_text()) for p in sorted(folder.glob("engine-*-part*.json"))]
    if not parts:
        raise SystemExit(f"no engine-*-part*.json in {folder}")
    rows = [row for part in parts for row in part["rows"]]
    upstream = {r["nfe_step"]: r["audio_s_per_s"] for r in rows if r["mode"] == "upstream" and r["precision"] == "fp32"}
    for row in rows:
        base = upstream.get(row.get("nfe_step"))
        row["vs_upstream"] = round(row["audio_s_per_s"] / base, 2) if base else None
    merged = {"benchmark": "engine-gpu", "machine": parts[0]["machine"], "arch": parts[0]["arch"],
              "model_arch": parts[0]["model_arch"], "parts": [{k: p[k] for k in ("part", "when", "wall_s", "budget_s",
                                                                                "skipped")} for p in parts],
              "note": "random weights (speed does not depend on them); upstream = chunk_text + infer_batch_process, "
                      "one segment per call; MFU against the dense bf16 peak", "rows": rows}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(merged, indent=2) + "\n")
    text = table(rows)
    (folder / f"{name}.txt").write_text(text)
    print(text)
    print(f"wrote {path}")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", help="1, 2, 3 or all")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--merge", metavar="DIR", help="only merge the parts found in DIR")
    parser.add_argument("--name", default="engine-gpu" if cuda else "engine-gpu-on-cpu",
                        help="base name of the merged file")
    parser.add_argument("--arch", choices=["full", "mid"], default="full" if cuda else "mid")
    parser.add_argument("--precisions", type=lambda s: s.split(","),  # a CPU emulates bf16 slowly: a dry run skips it
                        default=["bf16", "fp16", "fp32"] if cuda else ["fp32"])
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4, 8, 16, 32, 64] if cuda else [1, 8])
    parser.add_argument("--nfe", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32] if cuda else [16])
    parser.add_argument("--segments", type=int, default=128)
    parser.add_argument("--min-segments", type=int, default=16 if cuda else 8)
    parser.add_argument("--upstream-segments", type=int, default=16 if cuda else 8)
    parser.add_argument("--steady-s", type=float, default=60.0 if cuda else 20.0)
    parser.add_argument("--in-flight", type=int, default=128 if cuda else 16)
    parser.add_argument("--compile-steady", type=lambda s: s.lower() in ("1", "true", "on"), default=cuda,
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

"""How each kind of GPU-bench row is measured: upstream's own inference, this engine in process, and the serving path
(a spawned engine process under a deep queue). Each function measures one row and returns it; the callers
(``matrix.py``, ``quick.py``) decide what runs, in which order, and whether it fits the time left.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import measure
import torch
from measure import REF_PATH, REF_TEXT, request, sync, timed_row, useful_flops

from worker.engine.engine import Engine
from worker.planner import PlanItem, plan_batches

# ------------------------------------------------------------------------------------------------ upstream


@dataclass(frozen=True)
class UpstreamInputs:
    """The reference as upstream's ``infer_process`` would hand it to ``infer_batch_process``."""

    audio: torch.Tensor
    rate: int
    ref_text: str
    max_chars: int


def upstream_inputs() -> UpstreamInputs:
    """The reference read with soundfile (``torchaudio.load`` needs torchcodec and FFmpeg, which a bare machine
    lacks), its transcript ending in a space and ``max_chars`` from its length, as upstream's preprocessing does."""
    import soundfile as sf

    samples, rate = sf.read(REF_PATH, dtype="float32", always_2d=True)
    audio = torch.from_numpy(samples.T.copy())
    ref_text = REF_TEXT + " "
    ref_s = audio.shape[-1] / rate
    return UpstreamInputs(audio, rate, ref_text, int(len(ref_text.encode("utf-8")) / ref_s * (22 - ref_s)))


def upstream_model(engine: Engine, precision: str) -> torch.nn.Module:
    """Upstream's model at ``precision``: the fp32 engine's own CFM, or a copy cast whole to fp16 (what upstream
    does on GPUs of compute capability ≥ 7)."""
    import copy

    return engine.model if precision == "fp32" else copy.deepcopy(engine.model).half()


def measure_upstream(engine: Engine, model: torch.nn.Module, segments: Sequence[str], nfe: int,
                     precision: str) -> dict[str, Any]:
    """Upstream's own inference, one segment per call, as ``infer_process`` runs it (its text chunking, then
    ``infer_batch_process``). ``engine`` (fp32, eager) supplies the vocoder and the frame counts for the FLOPs."""
    import f5_tts.infer.utils_infer as upstream

    inputs = upstream_inputs()

    def run(chosen: Sequence[str]) -> float:
        produced = 0.0
        for seed, text in enumerate(chosen):
            torch.manual_seed(seed)
            wave, _, _ = next(upstream.infer_batch_process(
                (inputs.audio, inputs.rate), inputs.ref_text, upstream.chunk_text(text, max_chars=inputs.max_chars),
                model, engine.vocoder, nfe_step=nfe, device=str(engine.device), progress=None))
            produced += len(wave) / 24000
        return produced

    frames = [c.frames for i, t in enumerate(segments) for c in engine.prepare(request(t, i, nfe)).chunks]
    run(segments[:1])  # the first call allocates and tunes; not counted
    measure.reset_peak()
    start = time.perf_counter()
    audio_s = run(segments)
    sync()
    wall = time.perf_counter() - start
    return timed_row("upstream", precision, False, 1, nfe, audio_s, wall, useful_flops(engine.preset.arch, frames, nfe),
                     segments=len(segments), matmul_precision=torch.get_float32_matmul_precision())


# ------------------------------------------------------------------------------------------------ this engine


def pass_sizes(engine: Engine, calls: Sequence[Sequence[Any]]) -> list[int]:
    """Rows of every pass ``engine.synthesize`` runs for these calls (the same pure-Python plan it makes)."""
    sizes = []
    for call in calls:
        items = [PlanItem((i, k), chunk.frames, chunk.group) for i, prepared in enumerate(call)
                 for k, chunk in enumerate(prepared.chunks)]
        sizes += [plan.size for plan in plan_batches(items, engine.planner)]
    return sizes


def measure_engine(engine: Engine, segments: Sequence[str], batch: int, nfe: int, calls: int = 1,
                   **extra: Any) -> dict[str, Any]:
    """``calls`` calls of ``batch`` requests (cycling through ``segments``, a seed each), after one uncounted call of
    the same requests (its first run at these sizes); the planner packs each call into passes of one length bucket.
    ``recompiles``: graphs torch.compile built from the end of warm-up to the end of this row."""
    graphs = measure.compiled_graphs()
    requests = [request(segments[i % len(segments)], i, nfe) for i in range(batch * calls)]
    prepared = [engine.prepare(r) for r in requests]
    failed = [p.error for p in prepared if p.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} segments were refused: {failed[0]}")
    frames = [c.frames for p in prepared for c in p.chunks]
    sizes = pass_sizes(engine, [prepared[i : i + batch] for i in range(0, len(prepared), batch)])
    engine.synthesize(requests[:batch])
    measure.reset_peak()
    start = time.perf_counter()
    outputs = []
    for i in range(0, len(requests), batch):
        outputs.extend(engine.synthesize(requests[i : i + batch]))
    sync()
    wall = time.perf_counter() - start
    errors = [o.error for o in outputs if not o.ok]
    if errors:
        raise RuntimeError(f"{len(errors)} segments failed: {errors[0]}")
    return timed_row("engine", engine.precision, engine.compiled, batch, nfe, sum(o.duration_s for o in outputs),
                     wall, useful_flops(engine.preset.arch, frames, nfe), segments=len(requests),
                     passes=len(sizes), rows_per_pass=round(statistics.fmean(sizes), 2), max_rows_per_pass=max(sizes),
                     frames=sum(frames), recompiles=measure.compiled_graphs() - graphs, **extra)


# ------------------------------------------------------------------------------------------------ steady serving


def steady_run(model: dict[str, Any], segments: Sequence[str], nfe: int, precision: str, compiled: bool,
               in_flight: int, start_timeout_s: float, seconds_for: Callable[[], float],
               **config: Any) -> dict[str, Any]:
    """The serving path under a deep queue: ``in_flight`` single-segment requests always outstanding (as the
    worker's task threads keep them), through one spawned engine process (scheduler, prepare and send threads, the
    pipe). ``seconds_for()`` is asked once the engine is warm: how long to measure (what the time left allows)."""
    from worker.runtime.host import EngineHost

    passes: list[dict[str, Any]] = []
    engine_config = measure.engine_config(model, precision, compiled, **config)
    host = EngineHost(engine_config, [None], max_wait_s=engine_config.batch_wait_ms / 1000, on_pass=passes.append)
    start = time.monotonic()
    host.start(timeout_s=start_timeout_s)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        warm_s = time.monotonic() - start
        seconds = seconds_for()
        info = dict(host.info)
        row = _serve(host, passes, segments, nfe, in_flight, seconds, stop, threads)
    finally:
        stop.set()
        host.close()  # the requests still in flight fail with it: nobody waits for their passes
        for thread in threads:
            thread.join(timeout=10)
    warmup = info.get("warmup") or {}
    return {"mode": "engine-serving", "precision": info["precision"], "compile": compiled, "nfe_step": nfe,
            "in_flight": in_flight, **row, "start_s": round(warm_s, 1), "warmup_s": round(warmup.get("seconds", 0), 1),
            "graphs": warmup.get("graphs"), "frame_budget": info["frame_budget"],
            "buckets": list(engine_config.frame_buckets)}


def _serve(host: Any, passes: list[dict[str, Any]], segments: Sequence[str], nfe: int, in_flight: int,
           seconds: float, stop: threading.Event, threads: list[threading.Thread]) -> dict[str, Any]:
    produced, lock = [0.0, 0], threading.Lock()

    def client(index: int) -> None:
        n = index
        while not stop.is_set():
            try:
                outputs = host.synthesize([request(segments[n % len(segments)], n, nfe)], [f"steady-{n}"])
            except Exception:
                if stop.is_set():  # the engine was closed under it at the end of the window
                    return
                raise
            with lock:
                produced[0] += outputs[0].duration_s
                produced[1] += 1
            n += in_flight

    threads.extend(threading.Thread(target=client, args=(i,), daemon=True) for i in range(in_flight))
    with measure.UtilisationSampler() as sampler:
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
    busy = sum(p["seconds"] for p in window)
    idle = sum(p["idle_s"] for p in window)
    padded = sum(p["rows"] * p["padded_frames"] for p in window)
    row = {"seconds": round(wall, 1), "jobs": jobs, "audio_s": round(audio, 1),
           "audio_s_per_s": round(audio / wall, 2), "rtf": round(wall / audio, 5) if audio else None,
           "passes": len(window), "rows_per_pass": round(statistics.fmean(p["rows"] for p in window), 2)
           if window else None, "fill": round(sum(p["frames"] for p in window) / padded, 3) if padded else None,
           "busy_s": round(busy, 2), "idle_s": round(idle, 3),
           "idle_over_busy": round(idle / busy, 4) if busy else None,
           "recompiles": sum(p.get("recompiles", 0) for p in window), **sampler.summary()}
    memory = [p["memory"] for p in window if p.get("memory")]
    if memory:
        row["peak_allocated_gb"] = round(max(m["peak"] for m in memory) / 2**30, 2)
        row["reserved_gb"] = round(max(m["reserved"] for m in memory) / 2**30, 2)
    return row

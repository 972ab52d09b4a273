"""Prometheus metrics for a worker, served on an opt-in port (``F5_METRICS_PORT``).

Jobs by outcome, audio and inference seconds, per-job RTF, queue and batching waits; per sampling pass its rows, fill
and duration; the engine's busy time and its idle time between passes while work was waiting (the GPU's loss to
everything that is not a pass); compiles after warm-up; engine restarts; and the device memory each engine reports.
Torch-free: the engine processes report passes, and the worker turns them into metrics here.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from worker.contract import JobResult

log = logging.getLogger(__name__)

JOBS = Counter("f5_jobs", "Jobs finished, by outcome", ["outcome"])
AUDIO_SECONDS = Counter("f5_audio_seconds", "Seconds of audio produced")
INFERENCE_SECONDS = Counter("f5_inference_seconds", "Seconds spent in sampling and vocoding, attributed to jobs")
RTF = Histogram("f5_job_rtf", "Real-time factor per job (inference seconds / audio seconds)",
                buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
QUEUE_WAIT = Histogram("f5_queue_wait_seconds", "From publish to start of work",
                       buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200))
BATCH_WAIT = Histogram("f5_batch_wait_seconds", "From hand-over to the engine until the job's audio was ready",
                       buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60))
PASS_ROWS = Histogram("f5_pass_rows", "Rows (chunks) per sampling pass", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
PASS_FILL = Histogram("f5_pass_fill", "Real frames over padded frames per pass",
                      buckets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0))
PASS_SECONDS = Histogram("f5_pass_seconds", "Duration of a sampling pass, vocoding included",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
PASS_FRAMES = Counter("f5_pass_frames", "Frames through passes", ["kind"])  # real, padded
PASS_VOICES = Histogram("f5_pass_voices", "Distinct voices (reference clips) among a pass's rows",
                        buckets=(1, 2, 3, 4, 8, 16))
ENGINE_BUSY = Counter("f5_engine_busy_seconds", "Time the engines spent in passes")
ENGINE_IDLE = Counter("f5_engine_idle_seconds", "Time between passes while work was waiting in an engine")
RECOMPILES = Counter("f5_recompiles", "Graphs torch.compile built after warm-up (each is a stall while serving)")
ENGINE_RESTARTS = Counter("f5_engine_restarts", "Engine processes replaced after they stopped")
STAGES = Histogram("f5_job_stage_seconds", "Where a synthesised job's time went, by stage (queue, check, prepare, "
                   "engine_wait, inference, finish, transfer, encode, upload)", ["stage"],
                   buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60))
GPU_MEMORY = Gauge("f5_gpu_memory_bytes", "CUDA memory of the engine processes, as last reported", ["kind"])


def serve(port: int | None, addr: str = "127.0.0.1") -> int | None:
    if port is None:
        return None
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:  # another process of this worker (a prefork child) serves it already
        log.warning("metrics not served on port %d: %s", port, exc)
        return None
    log.info("metrics on port %d", port)
    return port


def on_pass(stats: dict[str, Any]) -> None:
    """One pass, as an engine process reports it."""
    PASS_ROWS.observe(stats["rows"])
    padded = stats["rows"] * stats["padded_frames"]
    PASS_FILL.observe(stats["frames"] / padded if padded else 1.0)
    PASS_SECONDS.observe(stats["seconds"])
    PASS_FRAMES.labels("real").inc(stats["frames"])
    PASS_FRAMES.labels("padded").inc(padded)
    if stats.get("voices"):
        PASS_VOICES.observe(stats["voices"])
    ENGINE_BUSY.inc(stats["seconds"])
    ENGINE_IDLE.inc(stats["idle_s"])
    if stats.get("recompiles"):
        RECOMPILES.inc(stats["recompiles"])
    for kind, value in (stats.get("memory") or {}).items():
        GPU_MEMORY.labels(kind).set(value)


def job_finished(result: JobResult | None, outcome: str) -> None:
    JOBS.labels(outcome).inc()
    if result is None or result.skipped:
        return
    AUDIO_SECONDS.inc(result.duration_s)
    INFERENCE_SECONDS.inc(result.timings.inference_s)
    if result.rtf is not None:
        RTF.observe(result.rtf)
    if result.timings.queue_s is not None:
        QUEUE_WAIT.observe(result.timings.queue_s)
    if result.timings.batch_wait_s is not None:
        BATCH_WAIT.observe(result.timings.batch_wait_s)
    for stage in ("queue", "check", "prepare", "engine_wait", "inference", "finish", "transfer", "encode", "upload"):
        value = getattr(result.timings, f"{stage}_s")
        if value is not None:
            STAGES.labels(stage).observe(value)

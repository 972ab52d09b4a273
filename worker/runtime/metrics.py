"""Prometheus metrics for a worker process, served on an opt-in port (``F5_METRICS_PORT``; pool process *i* of a
prefork worker uses port + *i*).

Jobs by outcome, audio and inference seconds, per-job RTF, queue and batching waits, and per sampling pass its rows
and duration. GPU memory is read at scrape time. Torch-free: the engine reports passes through ``on_pass``.
"""

from __future__ import annotations

import logging
import sys

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from worker.contract import JobResult

log = logging.getLogger(__name__)

JOBS = Counter("f5_jobs", "Jobs finished, by outcome", ["outcome"])
AUDIO_SECONDS = Counter("f5_audio_seconds", "Seconds of audio produced")
INFERENCE_SECONDS = Counter("f5_inference_seconds", "Seconds spent in sampling and vocoding")
RTF = Histogram("f5_job_rtf", "Real-time factor per job (inference seconds / audio seconds)",
                buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
QUEUE_WAIT = Histogram("f5_queue_wait_seconds", "From publish to start of work",
                       buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200))
BATCH_WAIT = Histogram("f5_batch_wait_seconds", "Waiting to share a pass with other jobs",
                       buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5))
PASS_ROWS = Histogram("f5_pass_rows", "Rows (chunks) per sampling pass", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
PASS_SECONDS = Histogram("f5_pass_seconds", "Duration of a sampling pass, vocoding included",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
GPU_MEMORY = Gauge("f5_gpu_memory_bytes", "CUDA memory of this process", ["kind"])


def _cuda_memory(kind: str) -> float:
    torch = sys.modules.get("torch")  # never import torch here: only report it where the engine already did
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0
    return float(torch.cuda.memory_allocated() if kind == "allocated" else torch.cuda.memory_reserved())


for _kind in ("allocated", "reserved"):
    GPU_MEMORY.labels(_kind).set_function(lambda kind=_kind: _cuda_memory(kind))


def serve(port: int | None, index: int = 0, addr: str = "127.0.0.1") -> int | None:
    if port is None:
        return None
    start_http_server(port + index, addr=addr)
    log.info("metrics on port %d", port + index)
    return port + index


def on_pass(rows: int, frames: int, seconds: float) -> None:
    PASS_ROWS.observe(rows)
    PASS_SECONDS.observe(seconds)


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

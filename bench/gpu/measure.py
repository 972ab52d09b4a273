"""What every GPU-bench row is measured with: the machine record, the random-weight model files, engine building and
warm-up (timed per shape), FLOP counting against the GPU's peak, device memory, and NVML utilisation.

Shared by ``matrix.py`` (the long, multi-part matrix) and ``quick.py`` (``bench/gpu/run --quick``: the headline in
one device call). Imported as a sibling module: both scripts run from this folder, with the repository root put on
``sys.path`` here, so that ``worker`` imports without an install.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
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

REF_TEXT = "Some call me nature, others call me mother nature."
# The CPU stand-in for F5TTS_v1_Base: the same classes, small enough that a 2-core dry run finishes in minutes.
MID_ARCH = {**TINY_ARCH, "dim": 192, "depth": 4, "heads": 3, "dim_head": 64, "text_dim": 96, "conv_layers": 2}
DENSE_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.0, "L40": 181.0,
                     "L20": 119.5, "A10": 125.0, "L4": 121.0}
SEGMENTS = Path(__file__).with_name("segments.json")
REF_PATH = str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))
ARCHES = ("full", "mid", "tiny")


# ------------------------------------------------------------------------------------------------ machine


def cuda() -> bool:
    return torch.cuda.is_available()


def device_name() -> str:
    return torch.cuda.get_device_name(0) if cuda() else "cpu"


def machine() -> dict[str, Any]:
    """Where the numbers come from: platform, device and the versions that decide the kernels."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count(), "device": device_name(), "torch_threads": torch.get_num_threads()}
    for package in ("torch", "torchaudio", "triton", "f5-tts", "vocos", "x-transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    if cuda():
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


def half_precision() -> str:
    """The precision a deployed worker picks here: bf16 from Ampere on, fp16 before; fp32 on a CPU (which emulates
    bf16 slowly, so a dry run measures what a CPU worker would run)."""
    if not cuda():
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(0) >= (8, 0) else "fp16"


def texts(count: int | None = None) -> list[str]:
    import json

    segments = json.loads(SEGMENTS.read_text(encoding="utf-8"))["segments"]
    return segments[:count] if count else segments


# ------------------------------------------------------------------------------------------------ model


def model_files(arch_name: str, cache: Path) -> dict[str, Any]:
    """The F5TTS_v1_Base architecture (or a smaller stand-in) with deterministic random weights, written as a real
    checkpoint, vocos folder and upstream-style YAML, so the engine loads it through its normal path (also in a
    spawned engine process). ``tiny`` also shrinks the vocoder: it exists for the shape test."""
    if arch_name not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, got {arch_name!r}")
    preset = random_variant(load_preset("F5TTS_v1_Base"), vocoder_size="tiny" if arch_name == "tiny" else "full")
    if arch_name != "full":
        preset = replace(preset, name=f"{arch_name}-random", arch=dict(MID_ARCH if arch_name == "mid" else TINY_ARCH))
    ckpt, vocoder = write_random_files(preset, packaged_vocab(), cache)
    config = cache / f"{preset.name}.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": preset.backbone, "arch": preset.arch,
                                                "mel_spec": preset.mel_spec}}))
    return {"model": str(config), "ckpt_file": str(ckpt), "vocoder_path": str(vocoder), "arch": preset.arch}


def engine_config(model: dict[str, Any], precision: str, compiled: bool, **extra: Any) -> EngineConfig:
    """The engine as a GPU runs it; on a CPU dry run too (batched passes, not the CPU's one row per pass)."""
    extra.setdefault("cpu_rows_per_pass", 1024)
    return EngineConfig(model=model["model"], ckpt_file=model["ckpt_file"], vocoder_path=model["vocoder_path"],
                        precision=precision, compile=compiled, **extra)


class Ref:
    """The reference clip every request speaks with (upstream's English example), read once."""

    audio: bytes = b""

    @classmethod
    def load(cls) -> None:
        cls.audio = Path(REF_PATH).read_bytes()


def request(text: str, seed: int, nfe: int) -> SynthesisRequest:
    return SynthesisRequest(text, VoiceInput(Ref.audio, REF_TEXT), JobParams(nfe_step=nfe), seed=seed)


def compiled_graphs() -> int:
    from worker.engine import runtime

    return runtime.compiled_graph_count()


def build_engine(model: dict[str, Any], precision: str, compiled: bool, **extra: Any) -> tuple[Engine, float]:
    """An engine as a worker builds it (its pass budget sized from free memory unless ``frame_budget`` is given),
    not yet warmed up; and how long the build took."""
    start = time.perf_counter()
    engine = Engine.build(engine_config(model, precision, compiled, **extra))
    return engine, time.perf_counter() - start


def warm(engine: Engine, buckets: Sequence[int] | None = None) -> dict[str, Any]:
    """Warm an engine up, recording each shape (rows, frames, CFG, seconds, graphs it built), so that compile time
    can be told from run time. ``buckets``: warm only these (see ``Engine.warm_up``)."""
    shapes: list[dict[str, Any]] = []
    graphs = [compiled_graphs()]

    def on_shape(rows: int, frames: int, use_cfg: bool, seconds: float) -> None:
        now = compiled_graphs()
        shapes.append({"rows": rows, "frames": frames, "cfg": use_cfg, "seconds": round(seconds, 3),
                       "new_graphs": now - graphs[-1]})
        graphs.append(now)

    report = engine.warm_up(buckets=buckets, on_shape=on_shape)
    return {"warmup_s": round(report.seconds, 1), "compile_s": round(sum(s["seconds"] for s in shapes
                                                                          if s["new_graphs"]), 1),
            "graphs": report.graphs, "shapes": report.shapes, "frame_budget": report.frame_budget,
            "buckets_warmed": list(buckets) if buckets is not None else list(engine.planner.frame_buckets),
            "warmup_shapes": shapes,
            "parameter_mb": {k: round(v / 1e6, 1) for k, v in report.parameter_bytes.items()}}


def build(model: dict[str, Any], precision: str, compiled: bool, buckets: Sequence[int] | None = None,
          **extra: Any) -> tuple[Engine, dict[str, Any]]:
    """Build and warm up an engine: the engine and what its build and warm-up took."""
    engine, built_s = build_engine(model, precision, compiled, **extra)
    return engine, {"build_s": round(built_s, 1), **warm(engine, buckets)}


# ------------------------------------------------------------------------------------------------ device


def sync() -> None:
    if cuda():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if cuda():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float | None]:
    """Peak device memory since the last ``reset_peak`` (None on a CPU: there is no VRAM to report)."""
    if not cuda():
        return {"peak_allocated_gb": None, "peak_reserved_gb": None}
    return {"peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def release() -> None:
    gc.collect()
    if cuda():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ counting


def useful_flops(arch: dict[str, Any], frames: Sequence[int], nfe: int, cfg: bool = True) -> float:
    """FLOPs of the DiT's useful work: per row and forward 16·d²·L·T (projections, MLP) + 4·T²·d·L (attention)."""
    d, layers = arch["dim"], arch["depth"]
    per_forward = sum(16 * d * d * layers * t + 4 * t * t * d * layers for t in frames)
    return per_forward * (2 if cfg else 1) * nfe


def peak_tflops() -> float | None:
    name = device_name()
    return next((value for key, value in DENSE_BF16_TFLOPS.items() if key in name), None)


def timed_row(mode: str, precision: str, compiled: bool, batch: int, nfe: int, audio_s: float, wall: float,
              flops: float, **extra: Any) -> dict[str, Any]:
    """One measured row: speed as RTF and audio seconds per second, MFU against the dense bf16 peak, peak VRAM."""
    peak = peak_tflops()
    achieved = flops / wall / 1e12
    return {"mode": mode, "precision": precision, "compile": compiled, "batch": batch, "nfe_step": nfe,
            "audio_s": round(audio_s, 2), "wall_s": round(wall, 3), "rtf": round(wall / audio_s, 5),
            "audio_s_per_s": round(audio_s / wall, 2), "tflops": round(achieved, 2),
            "mfu": round(achieved / peak, 4) if peak else None, **peak_memory(), **extra}


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

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_util_mean": None, "nvml": self.error}
        return {"gpu_util_mean": round(statistics.fmean(self.samples), 1),
                "gpu_util_median": statistics.median(self.samples), "gpu_util_samples": len(self.samples),
                "gpu_memory_used_gb_max": round(max(self.memory_used) / 2**30, 2)}

"""Process-level torch setup, done once when the engine is built (never at import): device, CUDA flags, compile,
the pass budget from the GPU's memory, and which errors mean the device is lost.

Compile (why the shapes are dynamic): a pass's shape is (rows, frames), and both vary with the work. Compiling each
shape statically would be one inductor compile per (rows × bucket × CFG) shape, hundreds of them at 20 s or more each
for the full DiT: hours of warm-up. The matmuls and attention, which are nearly all of the time, run the same kernels
for any size, so the batch and frame dimensions are compiled as symbolic sizes instead: two graphs per CFG setting (a
lone row is specialised by dynamo), all built during warm-up, and any later compile is counted and logged as a
warning. CUDA graphs (``F5_COMPILE_MODE=reduce-overhead``) record one graph per concrete shape; in that mode passes are
padded to the frame buckets so the set of shapes stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from worker.errors import EngineBuildError

log = logging.getLogger(__name__)

# What a fatal device error says (torch raises them as RuntimeError or torch.AcceleratorError). After any of these
# the CUDA context is unusable: every later kernel fails, so the process must be replaced.
_FATAL_DEVICE_ERRORS = (
    "illegal memory access", "device-side assert", "unspecified launch failure", "misaligned address",
    "illegal instruction", "uncorrectable ecc error", "cuda error: an illegal", "cublas_status_execution_failed",
    "cudnn_status_execution_failed", "cuda error: launch failure", "cuda error: unknown error",
    "hardware stack error", "device not ready", "cuda driver error", "context is destroyed",
)


class DeviceLostError(RuntimeError):
    """The device (its CUDA context) is unusable; only a fresh process can use it again."""


def is_fatal_device_error(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _FATAL_DEVICE_ERRORS)


def select_device(requested: str | None) -> torch.device:
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EngineBuildError(f"F5_DEVICE={requested} but CUDA is not available on this machine")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def capability(device: torch.device) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def configure_backends(device: torch.device, *, cudnn_benchmark: bool, matmul_precision: str) -> None:
    """cuDNN autotuning, TF32 on Ampere and later, and the float32 matmul precision (``TORCH_MATMUL_PRECISION``)."""
    torch.set_float32_matmul_precision(matmul_precision)
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    major, _ = torch.cuda.get_device_capability(device)
    tf32 = major >= 8 and matmul_precision != "highest"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def uses_cuda_graphs(mode: str) -> bool:
    return mode in ("reduce-overhead", "max-autotune")


def compile_transformer(transformer: torch.nn.Module, device: torch.device, mode: str) -> Callable:
    """``torch.compile`` the DiT with symbolic batch and frame sizes (see the module's docstring)."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    torch._dynamo.config.automatic_dynamic_shapes = True
    if device.type == "cuda" and uses_cuda_graphs(mode):
        import torch._inductor.config as inductor_config

        inductor_config.triton.cudagraph_dynamic_shape_warn_limit = None  # one graph per bucket shape is intended
    effective_mode = mode if device.type == "cuda" else "default"  # CUDA graphs exist only on CUDA
    log.info("torch.compile of the DiT, mode=%s, dynamic batch and frame sizes", effective_mode)
    return torch.compile(transformer, mode=effective_mode, fullgraph=True, dynamic=True)


def compiled_graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compiler_missing() -> str | None:
    """Why inductor cannot build kernels here (no C compiler: Triton's launcher and CPU kernels need one), or None."""
    import shutil

    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        return None
    return "no C compiler (cc, gcc or clang) on PATH; torch.compile needs one to build its kernels"


def frame_budget_from_memory(free_bytes: int, bytes_per_frame: float, *, max_batch: int, longest_bucket: int,
                             headroom: float = 0.8) -> int:
    """Rows × frames per pass that fit in ``headroom`` of the free memory, at the measured cost of one frame-row
    (CFG included), between one longest row and ``max_batch`` longest rows."""
    fitting = int(headroom * free_bytes / max(bytes_per_frame, 1.0))
    return max(longest_bucket, min(fitting, max_batch * longest_bucket))

"""Process-level torch setup, done once when the engine is built (never at import): device, CUDA flags, compile."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from worker.errors import EngineBuildError

log = logging.getLogger(__name__)


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


def compile_transformer(transformer: torch.nn.Module, device: torch.device, mode: str, shapes: int) -> Callable:
    """``torch.compile`` the DiT. Dynamo's shape cache is raised so that every warmed bucket shape stays compiled."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, shapes + 8)
    torch._dynamo.config.accumulated_cache_size_limit = max(
        torch._dynamo.config.accumulated_cache_size_limit, 4 * (shapes + 8))
    effective_mode = mode if device.type == "cuda" else "default"  # CUDA graphs exist only on CUDA
    log.info("torch.compile of the DiT, mode=%s", effective_mode)
    return torch.compile(transformer, mode=effective_mode, fullgraph=True)


def compiled_graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])

"""Which GPUs this worker may use, found without initialising CUDA (the prefork parent must never touch CUDA)."""

from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpus() -> list[str]:
    """GPU ids from ``CUDA_VISIBLE_DEVICES`` when set, else from ``nvidia-smi -L``; empty on a machine without any."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [gpu.strip() for gpu in declared.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def pin_child_to_gpu(index: int) -> str | None:
    """In a prefork child, before torch is imported: make GPU ``index mod count`` the only visible device."""
    gpus = visible_gpus()
    if not gpus:
        return None
    chosen = gpus[index % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen

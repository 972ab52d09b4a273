"""The precision policy: which dtype the DiT runs in on a given device.

Pure Python so it can be tested without a GPU: the caller passes the device type and compute capability.
``auto`` picks bf16 on compute capability ≥ 8.0 (Ampere and later), fp16 on ≥ 6.0, and fp32 on CPU or older GPUs.
The vocoder's ISTFT always runs in fp32, whatever the policy.
"""

from __future__ import annotations

from typing import Literal

Precision = Literal["bf16", "fp16", "fp32"]
PrecisionSetting = Literal["auto", "bf16", "fp16", "fp32"]
PRECISION_CHOICES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")


def resolve_precision(
    setting: str, device_type: str, capability: tuple[int, int] | None = None
) -> Precision:
    """Turn the ``F5_PRECISION`` setting into the precision this device will use.

    An explicit half precision on a device that cannot run it is an error, not a silent fallback.
    """
    if setting not in PRECISION_CHOICES:
        raise ValueError(f"F5_PRECISION must be one of {', '.join(PRECISION_CHOICES)}, got {setting!r}")
    if setting == "fp32":
        return "fp32"
    if device_type != "cuda":
        if setting == "auto":
            return "fp32"
        if setting == "bf16" and device_type == "cpu":
            return "bf16"  # CPU autocast supports bf16 (slow on most CPUs, but correct)
        raise ValueError(f"F5_PRECISION={setting} is not supported on {device_type}; use auto, bf16 or fp32")
    major, minor = capability or (0, 0)
    if setting == "auto":
        if major >= 8:
            return "bf16"
        return "fp16" if major >= 6 else "fp32"
    if setting == "bf16":
        if major < 8:
            raise ValueError(f"F5_PRECISION=bf16 needs compute capability ≥ 8.0; this GPU has {major}.{minor}")
        return "bf16"
    return "fp16"


def job_precision(worker_precision: Precision, use_fp16: bool) -> Precision:
    """A job with ``use_fp16=false`` really runs in fp32; otherwise it runs at the worker's precision."""
    return worker_precision if use_fp16 else "fp32"

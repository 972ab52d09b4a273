"""Helpers shared by the benchmarks: the machine record, corpus segments, and the results file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
REF_TEXT = "Some call me nature, others call me mother nature."


def corpus_path() -> Path:
    """The book the benchmarks read: ``F5_CORPUS`` (the whole Quijote makes the best benchmark), else the excerpt
    shipped in ``corpora/``."""
    path = Path(os.environ.get("F5_CORPUS") or REPO / "corpora" / "don-quijote-1-2.es.txt")
    if not path.is_file():
        raise FileNotFoundError(f"corpus {path} not found (F5_CORPUS)")
    return path


def quijote_segments(count: int, max_chars: int = 180) -> list[str]:
    """``count`` spoken segments of the book (no headings), as the producer cuts them; repeated if the book is short."""
    from producer.corpus import segments

    texts = [s.text for s in segments(corpus_path(), max_chars, "es") if not s.heading and len(s.text) >= 20]
    return [texts[i % len(texts)] for i in range(count)]


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    for package in ("torch", "f5-tts", "celery", "kombu", "redis", "boto3"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    with contextlib.suppress(OSError):
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True, check=False).stdout.strip()
    return info


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)

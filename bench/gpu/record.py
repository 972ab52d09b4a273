"""The results file of a GPU-bench run, rewritten after every row, and the time budget that decides which rows start.

Why after every row: a device call that reaches its limit is killed, and whatever the run had not written is lost.
So the JSON on disk is always whole (written to a temporary file in the same folder, then renamed over the old one)
and says ``complete: false`` until the run's end; a run cut off at its limit still returns every row measured
before the cut. Why a budget: a row that would not finish before it runs out is skipped with its reason (the time it
would need against the time left) instead of being started and cut off.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.gpu")

STARTED_ENV = "F5_BENCH_STARTED"  # epoch seconds when bench/gpu/run began: install and imports count too


def started_at() -> float:
    """When the run began, as ``time.time()``: from ``bench/gpu/run`` (so that its wheel install counts against the
    budget), else now."""
    value = os.environ.get(STARTED_ENV)
    try:
        return float(value) if value else time.time()
    except ValueError:
        return time.time()


def write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Whole or not at all: a reader (or a run killed mid-write) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(payload, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Results:
    """The rows of one run, with its budget; ``header()`` and ``summary()`` supply what else the file says."""

    def __init__(self, path: Path, budget_s: float, header: Callable[[], dict[str, Any]],
                 summary: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
                 started: float | None = None) -> None:
        self.path = path
        self.budget_s = budget_s
        self.started = started_at() if started is None else started
        self.header = header
        self.summarise = summary
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.notes: dict[Any, Any] = {}  # measured costs that later estimates use (not written)
        self.complete = False

    def elapsed(self) -> float:
        return time.time() - self.started

    def time_left(self) -> float:
        return self.budget_s - self.elapsed()

    def affordable(self, label: str, estimate_s: float, **row: Any) -> bool:
        """Whether a row estimated at ``estimate_s`` fits the time left; if not it is recorded as skipped."""
        if estimate_s <= self.time_left():
            return True
        self.skip(label, f"about {estimate_s:.0f} s needed, {max(self.time_left(), 0):.0f} s left of the "
                         f"{self.budget_s:.0f} s budget", **row)
        return False

    def skip(self, label: str, reason: str, **row: Any) -> None:
        self.skipped.append({"label": label, "reason": reason})
        if row:  # a planned row: it keeps its place in the ordered list, with why it is empty
            self.rows.append({**row, "label": label, "status": "skipped", "reason": reason})
        log.warning("skipped %s: %s", label, reason)
        self.write()

    def add(self, row: dict[str, Any]) -> None:
        row = {"status": "measured", **row}
        self.rows.append(row)
        shown = {k: row.get(k) for k in ("step", "mode", "precision", "compile", "batch", "nfe_step", "rtf",
                                         "audio_s_per_s", "mfu", "peak_allocated_gb") if k in row}
        print("  " + "  ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
        self.write()

    def finish(self) -> Path:
        self.complete = True
        return self.write()

    def payload(self) -> dict[str, Any]:
        body = {**self.header(), "complete": self.complete, "elapsed_s": round(self.elapsed(), 1),
                "budget_s": self.budget_s, "rows": self.rows, "skipped": self.skipped}
        if self.summarise is not None:
            body["summary"] = self.summarise(self.rows)
        return body

    def write(self) -> Path:
        write_atomically(self.path, self.payload())
        return self.path


COLUMNS = ["id", "mode", "precision", "compile", "batch", "nfe_step", "rtf", "audio_s_per_s", "vs_upstream", "mfu",
           "peak_allocated_gb", "peak_reserved_gb", "warmup_s", "compile_s", "recompiles", "rows_per_pass", "fill",
           "idle_over_busy", "gpu_util_mean"]


def table(rows: list[dict[str, Any]]) -> str:
    """The measured rows as a fixed-width text table (the columns any of them has)."""
    if not rows:
        return "(no rows measured)\n"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"

"""Test-only fault injection, for the fault tests that need a fault no machine here can produce on demand.

Off unless ``F5_TEST_FAULTS`` is set, which no deployment does. Each fault is ``kind:argument``, several joined by
``;``:

- ``kill:TEXT``: a pass holding a row whose text contains TEXT SIGKILLs its own process when it starts (a job that
  crashes its process every time, as a codec segfault or an OOM kill would).
- ``cuda-fatal-once:PATH``: the first pass after PATH is created (by anyone) fails with the error a lost CUDA context
  raises ("CUDA error: an illegal memory access was encountered"), and PATH is removed, so it happens once. No GPU
  here can fail on demand; everything after the raise is the real handling.
- ``finish-oom-once:PATH``: the first time the engine process's send thread finishes a job's audio after PATH is
  created, it fails with the error an out-of-memory cross-fade raises, and PATH is removed. (A fault hook for the send
  thread: no CPU here runs out of device memory on demand.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path

ENV = "F5_TEST_FAULTS"


def _faults() -> list[tuple[str, str]]:
    faults = []
    for part in os.environ.get(ENV, "").split(";"):
        name, colon, value = part.partition(":")
        if colon:
            faults.append((name, value))
    return faults


def before_pass(texts: Iterable[str]) -> None:
    """Called at the start of every pass with the texts of its rows."""
    faults = _faults()
    if not faults:
        return
    texts = list(texts)
    for kind, argument in faults:
        if kind == "kill" and any(argument in text for text in texts):
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "cuda-fatal-once":
            marker = Path(argument)
            if marker.exists():
                marker.unlink(missing_ok=True)
                raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by "
                                   f"{ENV} for a test)")


def before_finish(texts: Iterable[str]) -> None:
    """Called before a job's audio is finished (by the send thread; by the execute thread for a lone job)."""
    for kind, argument in _faults():
        if kind == "finish-oom-once":
            marker = Path(argument)
            if marker.exists():
                marker.unlink(missing_ok=True)
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by "
                                   f"{ENV} for a test)")

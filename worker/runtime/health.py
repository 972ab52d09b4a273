"""Is this worker doing its job? What a health check needs to turn red instead of staying green.

A worker whose engine keeps failing every job (a broken device that does not crash, a model that raises on every
pass) still answers Celery's ping. This keeps the last outcomes: when the last ``window`` jobs that reached the engine
all failed (bad input aside, which is the sender's fault), or when no engine process has been ready for
``stall_s``, the worker reports itself unhealthy. ``celery -A worker inspect f5_health`` asks it (see
``worker.control``), and docker-compose's health check uses that.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class Health:
    def __init__(self, ready_engines: Callable[[], int], window: int = 20, stall_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ready_engines = ready_engines
        self.window = window
        self.stall_s = stall_s
        self.clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._unready_since: float | None = None
        self.last_error = ""

    def job_ended(self, ok: bool, error: str = "") -> None:
        with self._lock:
            self._outcomes.append(ok)
            if not ok:
                self.last_error = error[:500]

    def report(self) -> dict[str, Any]:
        now = self.clock()
        ready = self.ready_engines()
        with self._lock:
            if ready:
                self._unready_since = None
            elif self._unready_since is None:
                self._unready_since = now
            outcomes = list(self._outcomes)
        reasons = []
        if len(outcomes) == self.window and not any(outcomes):
            reasons.append(f"the last {self.window} jobs all failed (last error: {self.last_error})")
        if self._unready_since is not None and now - self._unready_since >= self.stall_s:
            reasons.append(f"no engine process has been ready for {now - self._unready_since:.0f} s")
        return {"ok": not reasons, "reasons": reasons, "ready_engines": ready,
                "recent_jobs": len(outcomes), "recent_failures": outcomes.count(False)}

"""Ctrl-C and SIGTERM stop the producer, every time.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be. If that is inside a
finaliser (a ``__del__``, a weakref callback) the exception is reported as ignored, or swallowed by library code, and
a producer waiting on a full queue would go on waiting: CI once saw Ctrl-C do nothing for 30 s. So the handler also
records the request, and the loops that can wait long (backpressure) check it on every turn.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

_requested = threading.Event()


def raise_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C or SIGTERM came, even if the first one was lost on the way."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM (a container stop, ``kill``) interrupt, so cleanup runs."""
    def interrupt(signum: int, frame: FrameType | None) -> NoReturn:
        _requested.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested.clear()

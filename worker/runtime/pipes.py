"""The line between the worker and an engine process: two one-way OS pipes, each wide enough for a job's audio.

multiprocessing's duplex ``Pipe`` is a Unix socket pair, whose buffer is smaller than a job's audio (a few hundred
kB of 16-bit samples): a result crosses in pieces, each a wake-up of the reader and then of the writer. A pipe widened
to ``PIPE_BYTES`` (``F_SETPIPE_SZ``; 1 MiB is the most Linux lets an unprivileged process ask by default) takes it in
one write. On the 2-core development machine, a 240 kB message sent after an idle pause arrived in 0.63 ms through the
widened pipe and in 0.85 ms through the socket pair (median of 55). Where the pipes cannot be widened, the line is a
socket pair, as before.

A message may be followed by raw payloads (a job's 16-bit samples): written from the sender's own array, read into
the receiver's own buffer (a WAV file's, past its header), never pickled: each copy of a job's audio costs as much as
sending it did (a 240 kB copy takes 0.2 ms on a CPU that has just been idle, the state a lone job finds it in).

Closing works as with ``Pipe``: a process that dies closes its ends, and the other side's ``recv`` raises EOFError.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

log = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20


class Duplex(Protocol):
    """What the worker and an engine process use of their line."""

    def send(self, message: Any, payloads: Sequence[memoryview] = ()) -> None: ...

    def recv(self) -> Any: ...

    def recv_into(self, buffer: memoryview) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class Line:
    """One side of the line: ``send`` on one pipe, ``recv`` from the other (as a duplex ``Connection`` is used; the
    socket-pair fallback is one connection both ways)."""

    def __init__(self, receiving: Connection[Any, Any], sending: Connection[Any, Any]) -> None:
        self.receiving = receiving
        self.sending = sending
        self._reader: io.FileIO | None = None

    def send(self, message: Any, payloads: Sequence[memoryview] = ()) -> None:
        """``message``, then each payload's bytes as they are (the receiver knows their sizes from the message and
        reads each with ``recv_into``). Callers that share a side send under one lock: a message and its payloads
        are not interleaved with another's."""
        self.sending.send(message)
        for payload in payloads:
            view = payload.cast("B")
            while view:
                view = view[os.write(self.sending.fileno(), view):]

    def recv(self) -> Any:
        return self.receiving.recv()

    def recv_into(self, buffer: memoryview) -> None:
        """Exactly ``len(buffer)`` payload bytes, into ``buffer``; EOFError if the other side closes first."""
        if self._reader is None:
            self._reader = io.FileIO(self.receiving.fileno(), "rb", closefd=False)
        view = buffer
        while view:
            got = self._reader.readinto(view)
            if not got:
                raise EOFError("the line closed in the middle of a payload")
            view = view[got:]

    def fileno(self) -> int:
        """The receiving end's descriptor (a hang-up there means the other side is gone)."""
        return self.receiving.fileno()

    def close(self) -> None:
        self.receiving.close()
        self.sending.close()


def line_pair(context: Any) -> tuple[Duplex, Duplex]:
    """The two sides of a new line (``context``: a multiprocessing context): one for this process, one to hand to the
    process it starts (then closed here). Where the pipes cannot be widened (not Linux, or a lower
    ``fs.pipe-max-size``), multiprocessing's socket pair, whose buffer is still larger than a plain pipe's."""
    to_first, from_second = context.Pipe(duplex=False)  # (reading end, writing end)
    to_second, from_first = context.Pipe(duplex=False)
    try:
        for reading in (to_first, to_second):
            fcntl.fcntl(reading.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError) as exc:
        for end in (to_first, from_second, to_second, from_first):
            end.close()
        log.warning("engine pipes cannot be widened to %d bytes (%s); using a socket pair", PIPE_BYTES, exc)
        first, second = context.Pipe()
        return Line(first, first), Line(second, second)
    return Line(to_first, from_first), Line(to_second, from_second)

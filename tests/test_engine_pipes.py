"""The line between the worker and an engine process (``worker.runtime.pipes``): messages, and raw payloads after
them, across a real spawned process; through the widened pipes and through the socket-pair fallback."""

from __future__ import annotations

import fcntl
import multiprocessing

import numpy as np
import pytest

from worker.runtime.pipes import Line, line_pair

SIZES = (240_000, 3 * (1 << 20) + 7)  # a lone job's samples, and more than the widened pipe holds at once


def _speak(line: Line, torn: bool) -> None:
    """The engine's side: a message that announces its payloads, then their bytes as they are."""
    payloads = [np.arange(size, dtype=np.uint8) * 7 for size in SIZES]
    if torn:  # announces a payload of 1000 bytes, sends a tenth of it, and dies
        line.send(("done", [1000]), [memoryview(payloads[0][:100])])
        return
    line.send(("done", list(SIZES)), [memoryview(p) for p in payloads])
    line.send(("after", "the next message is intact"))


def _exchange(torn: bool = False) -> tuple[Line, multiprocessing.Process]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = line_pair(context)
    process = context.Process(target=_speak, args=(theirs, torn), daemon=True)
    process.start()
    theirs.close()
    return ours, process


@pytest.mark.parametrize("widened", [True, False], ids=["pipes", "socket-pair"])
def test_payloads_arrive_whole_into_the_receivers_buffers(monkeypatch, widened):
    if not widened:  # a kernel that refuses F_SETPIPE_SZ: the fallback carries payloads the same way
        def refuse(*_args):
            raise OSError("pipe size refused")

        monkeypatch.setattr(fcntl, "fcntl", refuse)
    line, process = _exchange()
    kind, sizes = line.recv()
    assert kind == "done"
    buffers = []
    for size in sizes:
        buffer = bytearray(44 + size)  # room for a header in front, as the worker reads a job's samples
        line.recv_into(memoryview(buffer)[44:])
        buffers.append(buffer)
    for size, buffer in zip(SIZES, buffers, strict=True):
        assert bytes(buffer[:44]) == bytes(44)
        assert np.array_equal(np.frombuffer(buffer, dtype=np.uint8, offset=44), np.arange(size, dtype=np.uint8) * 7)
    assert line.recv() == ("after", "the next message is intact")
    process.join(30)
    assert process.exitcode == 0
    with pytest.raises(EOFError):
        line.recv()


def test_a_payload_cut_short_by_a_dead_sender_is_an_eof():
    line, process = _exchange(torn=True)
    assert line.recv() == ("done", [1000])
    process.join(30)
    with pytest.raises(EOFError, match="middle of a payload"):
        line.recv_into(memoryview(bytearray(1000)))

"""One run of enqueueing a book: segments → messages → the broker (with backpressure) → the manifest.

Used by ``f5-batch enqueue`` and by ``f5-batch resume`` when an earlier enqueue was interrupted. Messages are published
by a child process (``producer.pipelined``) while this process reads and segments the corpus. Each manifest line is
written once its message is confirmed, in the book's reading order. The run says what it is doing on a terminal or
not, and says why when it waits: a full queue that nothing drains means no worker is consuming it.

Interrupting it (Ctrl-C, SIGTERM) stops publishing at once and leaves the partial manifest and the book record as
they are: ``f5-batch resume BOOK`` (or the same ``enqueue`` again) continues from there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from producer.jobs import Message
from producer.manifest import ManifestFiles, ReadingOrderWriter
from producer.pipelined import PipelinedPublisher
from producer.progress import Reporter


@dataclass
class EnqueueResult:
    segments: int  # manifest lines written (published by this run or an earlier one)
    skipped: int  # segments an earlier run had already published
    published: int  # messages sent by this run
    waited_s: float  # time spent blocked on a full queue
    elapsed_s: float


class EnqueueInterrupted(Exception):
    """Ctrl-C or SIGTERM: publishing stopped; the partial manifest lists what was published, in reading order."""

    def __init__(self, segments: int) -> None:
        super().__init__(f"interrupted after {segments} segments")
        self.segments = segments


class BlockedWatch:
    """Why publishing waits: the queue is full. Says so with the queue's length and name, and, when nothing has been
    taken from the queue for ``hint_after_s`` (its length has not gone down, and no room opened for another message),
    asks whether any worker consumes the queue at all."""

    def __init__(self, queue: str, max_queued: int, hint_after_s: float, clock: Callable[[], float] = time.monotonic):
        self.queue = queue
        self.max_queued = max_queued
        self.hint_after_s = hint_after_s
        self.clock = clock
        self._lowest: int | None = None
        self._published = -1
        self._since = clock()

    def message(self, length: int, published: int) -> str:
        now = self.clock()
        if self._lowest is None or length < self._lowest or published > self._published:
            # the queue drains, or room opened and was filled again since the last notice: someone consumes it
            self._lowest, self._published, self._since = length, published, now
        text = (f"waiting for room: queue {self.queue!r} holds {length} jobs (--max-queued {self.max_queued}); "
                f"{published} segments published so far")
        if now - self._since >= self.hint_after_s:
            text += f"; nothing taken for {now - self._since:.0f} s: no worker is consuming `{self.queue}`?"
        return text


class _Run:
    """The state of one publishing run: messages in flight, the manifest writer, the progress shown."""

    def __init__(self, reporter: Reporter, writer: ReadingOrderWriter, watch: BlockedWatch, closer) -> None:
        self.reporter = reporter
        self.writer = writer
        self.watch = watch
        self.closer = closer
        self.in_flight: dict[int, Message] = {}
        self.started = time.monotonic()

    def describe(self, done: int, total: int) -> str:
        rate = self.writer.next_ordinal / max(1e-6, time.monotonic() - self.started)
        return (f"{self.writer.next_ordinal} segments published ({rate:.0f}/s), "
                f"{100 * done / max(1, total):.0f}% of the corpus read")

    def confirmed(self, seqs: list[int]) -> None:
        for seq in seqs:
            message = self.in_flight.pop(seq)
            for ordinal, entry in zip(message.ordinals, message.entries, strict=True):
                if ordinal >= self.writer.next_ordinal:  # lower ones are in the manifest from an earlier run
                    self.writer.add(ordinal, entry)
            if self.closer is not None:
                self.closer.confirmed(message)
            self.reporter.update(advance=sum(len(e.text.encode()) for e in message.entries))
        self.writer.flush()
        self.reporter.update(rate=f"{self.writer.next_ordinal} segments")

    def blocked(self, length: int) -> None:
        self.reporter.notice("blocked", self.watch.message(length, self.writer.next_ordinal))
        self.reporter.tick()


def publish_book(messages: Iterable[Message], files: ManifestFiles, already: set[tuple[str, str]], *, queue: str,
                 max_queued: int, priority: int | None, title: str, total_bytes: int, interval_s: float,
                 closer=None) -> EnqueueResult:
    """Publish every message not already published, and write the manifest in reading order as they are confirmed."""
    files.folder.mkdir(parents=True, exist_ok=True)
    skipped = 0
    watch = BlockedWatch(queue, max_queued, hint_after_s=max(2 * interval_s, 1.0))
    with files.partial.open("a", encoding="utf-8") as out, Reporter(title, total_bytes, "bytes", interval_s) as rep:
        writer = ReadingOrderWriter(out)
        writer.next_ordinal = len(already_lines(files))
        run = _Run(rep, writer, watch, closer)
        rep.describe = run.describe
        publisher = PipelinedPublisher(queue, max_queued, run.confirmed, priority, on_blocked=run.blocked)
        try:
            for seq, message in enumerate(messages):
                run.in_flight[seq] = message
                if closer is not None:
                    closer.produced(message)
                if all((entry.id, entry.task_id) in already for entry in message.entries):
                    skipped += len(message.entries)
                    run.confirmed([seq])  # published by an earlier run: recorded in order, not sent again
                    continue
                publisher.submit(seq, message.task, message.kwargs, message.task_id, message.summary)
            publisher.finish()
            if closer is not None:
                closer.finish()
        except KeyboardInterrupt:
            publisher.abort()
            out.flush()
            raise EnqueueInterrupted(writer.next_ordinal) from None
        except BaseException:
            publisher.abort()
            raise
        rep.update(done=total_bytes)
    return EnqueueResult(writer.next_ordinal, skipped, publisher.published, publisher.waited_s,
                         time.monotonic() - run.started)


def already_lines(files: ManifestFiles) -> list[str]:
    """Lines an earlier, interrupted run left in the partial manifest (a reading-order prefix of the book)."""
    if not files.partial.exists():
        return []
    return [line for line in files.partial.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_size(path: Path) -> int:
    return max(1, path.stat().st_size) if path.is_file() else 1


def finish_manifest(files: ManifestFiles) -> None:
    os.replace(files.partial, files.final)

"""One run of enqueueing a book: segments → messages → the broker (with backpressure) → the manifest.

Used by ``f5-batch enqueue`` and by ``f5-batch resume`` when an earlier enqueue was interrupted. Messages are published
by a child process (``producer.pipelined``) while this process reads and segments the corpus. Each manifest line is
written once its message is confirmed (or found not to need sending), in the book's reading order, into a partial
manifest written afresh by every run: a run never appends to what an earlier run wrote, so a changed corpus can never
leave a manifest of two segmentations, and a line cut short by a power loss is simply written again.

A segment is sent only if nothing can still produce its audio: its key is not in storage, and no message in the broker
(waiting, or held by a worker) carries it (``worker.broker.inventory``). So running ``enqueue`` or ``resume`` again,
interrupted or not, sends each missing segment exactly once.

The run says what it is doing on a terminal or not, and says why when it waits: a full queue that nothing drains means
no worker is consuming it. Interrupting it (Ctrl-C, SIGTERM) stops publishing at once and leaves the partial manifest
and the book record as they are: ``f5-batch resume BOOK`` (or the same ``enqueue`` again) continues from there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from producer.jobs import Message
from producer.manifest import ManifestFiles, ReadingOrderWriter
from producer.pipelined import PipelinedPublisher
from producer.progress import Reporter

if TYPE_CHECKING:
    from producer.autoassemble import ChapterCloser


@dataclass
class EnqueueResult:
    segments: int  # manifest lines written
    skipped: int  # segments not sent: their audio is stored, or a message in the broker carries them
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

    def __init__(self, reporter: Reporter, writer: ReadingOrderWriter, watch: BlockedWatch,
                 closer: ChapterCloser | None) -> None:
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
                self.writer.add(ordinal, entry)
            if self.closer is not None:
                self.closer.confirmed(message)
            self.reporter.update(advance=sum(len(e.text.encode()) for e in message.entries))
        self.writer.flush()
        self.reporter.update(rate=f"{self.writer.next_ordinal} segments")

    def blocked(self, length: int) -> None:
        self.reporter.notice("blocked", self.watch.message(length, self.writer.next_ordinal))
        self.reporter.tick()


def publish_book(messages: Iterable[Message], files: ManifestFiles, not_needed: set[str], *, queue: str,
                 max_queued: int, priority: int | None, title: str, total_bytes: int, interval_s: float,
                 closer: ChapterCloser | None = None, known_tasks: dict[str, str] | None = None) -> EnqueueResult:
    """Publish what each message carries that is not in ``not_needed`` (keys stored, or carried by a message in the
    broker), and write the manifest afresh, in reading order, as messages are confirmed. A segment not sent is listed
    with the task that does carry it (``known_tasks``: key -> task id, from the broker or the previous manifest)."""
    known_tasks = known_tasks or {}
    files.folder.mkdir(parents=True, exist_ok=True)
    skipped = 0
    watch = BlockedWatch(queue, max_queued, hint_after_s=max(2 * interval_s, 1.0))
    with files.partial.open("w", encoding="utf-8") as out, Reporter(title, total_bytes, "bytes", interval_s) as rep:
        writer = ReadingOrderWriter(out)
        run = _Run(rep, writer, watch, closer)
        rep.describe = run.describe
        publisher = PipelinedPublisher(queue, max_queued, run.confirmed, priority, on_blocked=run.blocked)
        try:
            for seq, message in enumerate(messages):
                run.in_flight[seq] = message
                if closer is not None:
                    closer.produced(message)
                needed = message.only({e.key for e in message.entries if e.key not in not_needed})
                message = run.in_flight[seq] = _listed_with_their_tasks(message, needed, known_tasks)
                if needed is None:
                    skipped += len(message.entries)
                    run.confirmed([seq])  # stored, or still on its way: listed in order, not sent again
                    continue
                skipped += len(message.entries) - len(needed.kwargs.get("jobs", [needed.kwargs.get("job")]))
                not_needed.update(e.key for e in message.entries)  # a key twice in a book is sent once
                publisher.submit(seq, needed.task, needed.kwargs, needed.task_id, needed.summary)
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


def _listed_with_their_tasks(message: Message, needed: Message | None, known: dict[str, str]) -> Message:
    """The message, each entry pointing at the task that will produce its audio: this message's for the jobs it
    sends, the known carrier's for the others (already stored, or on their way in another message)."""
    sent = set() if needed is None else {job["output"]["key"] for job in
                                         needed.kwargs.get("jobs", [needed.kwargs.get("job")])}
    entries = [entry if entry.key in sent or entry.key not in known else
               entry.model_copy(update={"task_id": known[entry.key]}) for entry in message.entries]
    return replace(message, entries=entries)


def corpus_size(path: Path) -> int:
    return max(1, path.stat().st_size) if path.is_file() else 1


def finish_manifest(files: ManifestFiles) -> None:
    os.replace(files.partial, files.final)

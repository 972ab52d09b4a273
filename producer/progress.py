"""Progress the user can see, on a terminal or not: bars on a terminal, plain timestamped lines elsewhere.

Everything goes to stderr, so stdout stays clean for scripts. On a terminal, rich draws live bars. When stderr is a
file, a pipe or a container log, a live bar prints nothing until the end, which looks like a hung process; there the
same progress goes out as one plain line every ``interval`` seconds instead. Notices (the queue is full and the
producer waits) are printed in both cases, at most once per interval each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, soft_wrap=True)  # log lines stay whole in files

# How often a non-terminal run reports progress, and how often a blocked run says why it waits (F5_PROGRESS_INTERVAL).
DEFAULT_INTERVAL_S = 30.0


def bar(unit: str = "segments") -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit} · {{task.fields[rate]}}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def say(message: str) -> None:
    """One plain line on stderr, timestamped: readable in a log file and on a terminal alike."""
    console.print(f"{time.strftime('%H:%M:%S')} {message}", markup=False, highlight=False, soft_wrap=True)


class Reporter(AbstractContextManager["Reporter"]):
    """Progress of one long operation: a live bar on a terminal, else a plain line every ``interval`` seconds.

    ``describe(done, total)`` turns the counters into the words of a plain line.
    """

    def __init__(self, title: str, total: int, unit: str, interval: float = DEFAULT_INTERVAL_S,
                 describe: Callable[[int, int], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.title = title
        self.total = total
        self.interval = interval
        self.describe = describe or (lambda done, total: f"{done} of {total} {unit}")
        self.clock = clock
        self.done = 0
        self.rate = ""
        self._live = console.is_terminal
        self._bar = bar(unit) if self._live else None
        self._task: TaskID | None = None
        self._last_line = clock()
        self._last_notice: dict[str, float] = {}

    def __enter__(self) -> Reporter:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, rate="…")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, traceback)

    def update(self, done: int | None = None, advance: int = 0, rate: str | None = None) -> None:
        self.done = done if done is not None else self.done + advance
        self.rate = rate if rate is not None else self.rate
        if self._bar is None:
            self.tick()
        elif self._task is not None:  # the bar shows from __enter__ on
            self._bar.update(self._task, completed=self.done, rate=self.rate or "…")

    def tick(self) -> None:
        """Print the plain progress line if one is due (no-op on a terminal, where the bar is live)."""
        now = self.clock()
        if self._bar is None and now - self._last_line >= self.interval:
            self._last_line = now
            say(f"{self.title}: {self.describe(self.done, self.total)}" + (f" ({self.rate})" if self.rate else ""))

    def notice(self, kind: str, message: str) -> None:
        """Say why the operation is not moving, at most once per interval for each kind of reason."""
        now = self.clock()
        last = self._last_notice.get(kind)
        if last is not None and now - last < self.interval:
            return
        self._last_notice[kind] = now
        if self._bar is not None:
            self._bar.console.log(message, markup=False, highlight=False)
        else:
            say(message)

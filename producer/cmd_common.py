"""What the commands share: the storage and broker context, the common options, chapter ranges."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from producer.progress import DEFAULT_INTERVAL_S
from worker.settings import load_settings
from worker.storage import by_url

if TYPE_CHECKING:
    from celery import Celery

    from worker.settings import Settings
    from worker.storage import Storage


class _InChapter(Protocol):
    @property
    def chapter(self) -> int: ...


T = TypeVar("T", bound=_InChapter)

common = [
    click.option("--prefix", default="books", show_default=True, help="Key prefix under the storage URL."),
    click.option("--manifest-dir", default="manifests", show_default=True, type=click.Path(path_type=Path)),
]
progress_option = click.option(
    "--progress-every", "interval_s", default=DEFAULT_INTERVAL_S, show_default=True, type=click.FloatRange(min=0.1),
    envvar="F5_PROGRESS_INTERVAL", help="Seconds between progress lines when stderr is not a terminal, and between "
    "notices of why the producer waits.")
resend_option = click.option(
    "--resend-after", "resend_after", default=120.0, show_default=True, type=click.FloatRange(min=1),
    envvar="F5_RESEND_AFTER", help="With --wait: when nothing is stored for this long and the queue is empty, send "
    "again the missing segments that no message in the broker carries (their messages were lost, as in a broker "
    "failover).")


def with_common(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(common):
        function = option(function)
    return function


def _context() -> tuple[Settings, Celery, Storage]:
    from worker.celery_app import app, publish_through_the_hardened_transport

    settings = load_settings()
    return settings, publish_through_the_hardened_transport(app, settings), by_url(settings.storage.storage_url,
                                                                                   settings.storage)


def _chapter_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use N or N-M", param_hint="--chapters") from None


def only_chapters(items: Iterable[T], chapter_range: str | None) -> Iterator[T]:
    """Segments or manifest entries of the chapters in ``chapter_range`` (``N`` or ``N-M``; None: all)."""
    bounds = _chapter_range(chapter_range)
    return iter(items) if bounds is None else (item for item in items if bounds[0] <= item.chapter <= bounds[1])

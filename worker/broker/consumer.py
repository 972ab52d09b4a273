"""The worker's consumer (Celery's ``worker_consumer`` setting): task events for Flower go out a moment late, batched.

With an event loop, Celery already buffers task events (``task-received``, ``task-started``, ``task-succeeded``) and
publishes them as one ``task.multi`` message, but it asks the loop to do so at once: each job's events are published
on its way to its engine, a Redis round trip on the loop's thread while the job's own thread wants the interpreter
(about a millisecond of a lone job's way, measured side by side in ``bench_pipeline``'s terms). Here the loop
publishes them ``EVENTS_AFTER_S`` after the first of them was buffered: Flower sees them that much later, a lone job's
events go out while it runs on its engine (or after its result), and a busy worker sends one message for many events.
Celery's own limit still holds: a buffer that reaches 24 events is published at once, by the thread that fills it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from vine import promise

#: How long a buffered task event waits before the loop publishes it with those buffered meanwhile.
EVENTS_AFTER_S = 0.025
#: A flush scheduled this long ago and still not run is taken as lost (a defence: kombu keeps a loop's timers across a
#: reconnection, but a flag that outlived its flush would silence Flower for good): the next event schedules one.
FLUSH_LOST_AFTER_S = 1.0


class Consumer(CeleryConsumer):
    hub: Any  # Celery's (kombu's event loop); its stubs leave these out
    _flush_events: Callable[[], None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events_lock = threading.Lock()
        self._events_flush_at: float | None = None  # when the scheduled flush is due; None: none is
        self._schedule_events_flush = promise(self._schedule_flush)  # one object: the loop's ready set holds it once

    def on_send_event_buffered(self) -> Any:
        """Called by the event dispatcher, on any thread, after it buffered a task event."""
        if not self.hub:
            return super().on_send_event_buffered()
        now = monotonic()
        with self._events_lock:
            due = self._events_flush_at
            if due is not None and now < due + FLUSH_LOST_AFTER_S:
                return  # a flush is coming, and takes this event with it
            self._events_flush_at = now + EVENTS_AFTER_S
        self.hub.call_soon(self._schedule_events_flush)  # timers belong to the loop's thread
        return None

    def _schedule_flush(self) -> None:
        self.hub.call_later(EVENTS_AFTER_S, self._flush_due_events)

    def _flush_due_events(self) -> None:
        with self._events_lock:
            self._events_flush_at = None  # events buffered from here on schedule the next flush
        self._flush_events()

    def on_close(self) -> None:
        """The connection is closing (a reconnection follows, or the end): what is buffered goes now. Celery carries
        a dispatcher's unsent events over to the next one only if a publish failed, not those still buffered."""
        with contextlib.suppress(Exception):  # a broker that is gone: the dispatcher keeps them to send after
            self._flush_events()
        super().on_close()

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):  # a broker gone by now loses the last events, as Celery's would
            self._flush_events()  # what is still buffered, before the dispatcher closes
        super().shutdown()

"""The engine process: one per GPU, spawned by the worker. It owns CUDA, the model and the pass scheduler.

The worker process (Celery, threads pool, no torch) does all the I/O: message handling, storage reads and writes, WAV
encoding. It hands requests to this process over a pipe and gets waveforms back. Here three threads keep the device
busy:

- *prepare*: references, chunking and tokens for new requests (CPU work, beside the running pass; a lone request
  is prepared by the thread that reads the pipe, without a hand-over);
- *execute*: asks the scheduler for the next pass and runs it, back to back, while work is waiting;
- *send*: finishes requests (cross-fade on the device, one copy to the host) and sends the results, while the next
  pass runs (a lone job, with no next pass, is finished and sent by *execute* itself).

The time between one pass's end and the next one's start while work was waiting is measured and reported with each
pass: it is what the GPU loses to everything that is not a pass.

A lost device (illegal memory access, device-side assert) poisons the CUDA context for good: the process reports it
and exits, and the worker starts a fresh one and retries the jobs it held. If the worker dies, the pipe closes and this
process exits at once.

No other exception may silence the process: a job whose audio cannot be finished (an out-of-memory error in the
cross-fade, say) fails alone and is retried; anything that escapes a thread's loop anyway ends the process, so that the
worker replaces it and retries its jobs, instead of leaving them waiting for results that nobody would send.

Reference clips cross the pipe once per process: later requests in the same voice name it by its digest (see
:class:`ClipStore`), which keeps one copy per voice here instead of one per job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import select
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.engine import faults
from worker.errors import BadInputError, TransientError

if TYPE_CHECKING:
    import torch

    from worker.engine.engine import Engine, PassResult
    from worker.engine.types import SynthesisRequest
    from worker.runtime.pipes import Duplex
    from worker.runtime.scheduler import Pass, Ticket

log = logging.getLogger(__name__)

DEVICE_LOST_EXIT = 70
THREAD_DIED_EXIT = 71
# The GIL's hand-over interval (Python's default is 5 ms): a thread woken by another (prepared, finished, sent) gets the
# interpreter within a fraction of a millisecond instead of up to 5 ms later, which a lone job would wait several times
# over. The threads here spend their time in torch and in the pipe, which release the GIL anyway.
SWITCH_INTERVAL_S = 0.0005
CLIP_STORE_BYTES = 512 * 1024 * 1024


class ClipStore:
    """Reference clips this process was sent, by SHA-256, least recently used first out past a byte budget."""

    def __init__(self, max_bytes: int = CLIP_STORE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._clips: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, digest: str, data: bytes) -> None:
        with self._lock:
            if digest in self._clips:
                self._clips.move_to_end(digest)
                return
            self._clips[digest] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._clips) > 1:
                _, evicted = self._clips.popitem(last=False)
                self._bytes -= len(evicted)

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._clips.get(digest)
            if data is not None:
                self._clips.move_to_end(digest)
            return data


class VoiceMissing(Exception):
    """A request names a clip by digest that this process does not hold (evicted, or it arrived before its bytes)."""


def _guarded(loop: Callable[[], None], name: str) -> Callable[[], None]:
    """A thread's loop that must never end: if it does, the process exits so that the worker replaces it."""

    def run() -> None:
        try:
            loop()
            log.critical("the %s thread stopped; this engine process exits so that the worker replaces it", name)
        except BaseException:
            log.critical("the %s thread failed; this engine process exits so that the worker replaces it and "
                         "retries its jobs", name, exc_info=True)
        os._exit(THREAD_DIED_EXIT)

    return run


def main(conn: Duplex, config: dict[str, Any], env: dict[str, str], name: str,
         max_wait_s: float) -> None:
    """Entry point of the spawned process."""
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES and thread counts, before torch is imported
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("F5_ENGINE_LOG_LEVEL", "INFO"),
                        format=f"[%(asctime)s: %(levelname)s/{name}] %(message)s", force=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the worker, which stops this process
    threading.Thread(target=_exit_when_orphaned, args=(conn.fileno(),), name="f5-orphan-watch", daemon=True).start()
    try:
        from worker.engine.config import EngineConfig
        from worker.engine.engine import Engine

        engine = Engine.build(EngineConfig(**config))
        report = engine.warm_up() if engine.config.warmup else None
    except BaseException as exc:  # the worker reports it and stops: a worker that cannot build must not serve
        log.debug("engine build failed", exc_info=True)
        conn.send(("build_failed", f"{type(exc).__name__}: {exc}"))
        os._exit(1)
    conn.send(("ready", {"model": engine.model_name, "precision": engine.precision, "fingerprint": engine.fingerprint,
                         "device": str(engine.device), "frame_budget": engine.planner.frame_budget,
                         "warmup": report.__dict__ if report else None, "pid": os.getpid()}))
    EngineServer(engine, conn, max_wait_s).serve()


def _exit_when_orphaned(fd: int) -> None:
    """Exit once the worker's end of the line is closed (the worker, or the prefork child that started this process,
    is gone, however it died). While the model builds and warms up (minutes, and a GPU's memory) nothing reads the
    line, so without this the process would build on for nobody."""
    if not hasattr(select, "poll"):
        return
    poller = select.poll()
    poller.register(fd, 0)  # no events asked for: poll returns only on a hang-up or an error
    poller.poll()
    os._exit(0)


class EngineServer:
    def __init__(self, engine: Engine, conn: Duplex, max_wait_s: float) -> None:
        from worker.runtime.scheduler import PassScheduler

        self.engine = engine
        self.conn = conn
        target = engine.config.interactive_target_ms / 1000
        self.scheduler = PassScheduler(engine.planner, max_wait_s, interactive_target_s=target or None)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._incoming: queue.Queue[Ticket] = queue.Queue()
        self._outbox: queue.Queue[Ticket | tuple[Any, ...]] = queue.Queue()  # results to send, or messages
        self._preparing = 0
        self._cancelled_early: set[int] = set()
        self._nested = False  # an interactive pass is running between two steps of another (execute thread only)
        self._nested_s = 0.0  # seconds spent in such passes: not the running pass's own time
        self.clips = ClipStore()

    def send(self, message: tuple[Any, ...], payloads: Sequence[memoryview] = ()) -> None:
        with self._send_lock:
            self.conn.send(message, payloads)

    def serve(self) -> None:
        for target, name in ((self._prepare_loop, "prepare"), (self._execute_loop, "execute"),
                             (self._send_loop, "send")):
            threading.Thread(target=_guarded(target, name), name=f"f5-{name}", daemon=True).start()
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the worker is gone: nothing left to serve
                os._exit(0)
            kind = message[0]
            if kind == "submit":
                from worker.runtime.scheduler import Ticket

                tickets = [Ticket(ticket_id, requests, priority, alone)
                           for ticket_id, requests, priority, alone in message[1]]
                with self._cond:  # counted together: the scheduler waits for all of them before it starts a pass
                    self._preparing += len(tickets)
                    lone = len(tickets) == 1 and self._preparing == 1
                if lone:  # prepared here (a fraction of a millisecond), not handed over to the prepare thread
                    self._prepare(tickets[0])
                    continue
                for ticket in tickets:
                    self._incoming.put(ticket)
            elif kind == "cancel":
                with self._cond:
                    if self.scheduler.cancel(message[1]) is None:
                        self._cancelled_early.add(message[1])
                    self._cond.notify_all()
            elif kind == "stop":
                os._exit(0)

    def _with_clip(self, request: SynthesisRequest) -> SynthesisRequest:
        """The request with its clip's bytes: as sent, or from the clips this process holds by digest."""
        voice = request.voice
        if voice.audio is not None:
            if voice.sha256 is not None:
                self.clips.add(voice.sha256, voice.audio)
            return request
        data = self.clips.get(voice.sha256) if voice.sha256 is not None else None
        if data is None:
            raise VoiceMissing(voice.sha256)
        return dataclasses.replace(request, voice=dataclasses.replace(voice, audio=data))

    def _prepare_loop(self) -> None:
        while True:
            self._prepare(self._incoming.get())

    def _prepare(self, ticket: Ticket) -> None:
        missing = False
        try:
            ticket.requests = [self._with_clip(request) for request in ticket.requests]
            ticket.prepared = [self.engine.prepare(request) for request in ticket.requests]
        except VoiceMissing:
            missing = True
        except Exception as exc:  # an engine fault, not bad input (that is kept per request)
            log.exception("preparing a request failed")
            ticket.error = TransientError(f"preparation failed: {type(exc).__name__}: {exc}")
        with self._cond:
            self._preparing -= 1
            if not missing:
                if ticket.id in self._cancelled_early:
                    self._cancelled_early.discard(ticket.id)
                    ticket.cancelled = True
                self.scheduler.add(ticket)
            self._cond.notify_all()
        if missing:  # the worker sends the ticket again with its clips (through the send thread: the pipe's reader,
            # which may call this, must never block on a write while the worker blocks writing to it)
            self._outbox.put(("voice_missing", ticket.id))

    def _next(self) -> Pass:
        from worker.runtime.scheduler import Pass

        with self._cond:
            while True:
                for ticket in self.scheduler.finished():
                    self._outbox.put(ticket)
                decision = self.scheduler.next_pass(preparing=self._preparing)
                if isinstance(decision, Pass):
                    return decision
                self._cond.wait(timeout=decision)

    def _work_waiting(self) -> bool:
        with self._cond:
            return len(self.scheduler) > 0 or self._preparing > 0

    def _execute_loop(self) -> None:
        last_end, waited = None, False
        while True:
            self._execute_guarded(self._next(), None if last_end is None or not waited else last_end)
            last_end, waited = time.monotonic(), self._work_waiting()

    def _execute_guarded(self, chosen: Pass, idle_since: float | None) -> None:
        try:
            self._execute(chosen, idle_since)
        except Exception as exc:  # outside the pass itself: its jobs fail (and are retried), the loop goes on
            log.exception("handling a pass of %d rows failed", chosen.plan.size)
            with self._cond:
                self.scheduler.abandon(chosen, TransientError(
                    f"the engine failed around a pass: {type(exc).__name__}: {exc}"))
                self._cond.notify_all()

    def _between_steps(self, chosen: Pass) -> Callable[[], bool]:
        """What the sampler asks between two steps of ``chosen``: stop (every job in it was abandoned)? And, for a pass
        without interactive work, interactive chunks that arrived meanwhile run first, in a pass of their own, right
        there: a /tts request waits one step of the book's pass, not the whole pass, and the book's pass goes on where
        it was. The nested pass runs on this thread, with the book's state kept by the sampler."""
        from worker.runtime.scheduler import all_cancelled

        cancelled = all_cancelled(chosen)
        with self._cond:
            interruptible = not self._nested and self.scheduler.may_interrupt(chosen)
        if not interruptible:
            return cancelled

        def between_steps() -> bool:
            if cancelled():
                return True
            if self.scheduler.has_urgent():
                try:
                    with self._cond:
                        urgent = self.scheduler.urgent_pass()
                except Exception:  # never the running pass's failure: it goes on, and the request waits for it
                    log.exception("choosing an interactive pass between two steps failed")
                    return False
                if urgent is not None:
                    self._nested, started = True, time.monotonic()
                    try:
                        self._execute_guarded(urgent, None)
                    finally:
                        self._nested, self._nested_s = False, self._nested_s + time.monotonic() - started
            return False

        return between_steps

    def _execute(self, chosen: Pass, idle_since: float | None) -> None:
        """Run one chosen pass and hand its outcome on. ``idle_since``: when the previous pass ended, if work was
        waiting then (the gap is the engine's idle time)."""
        from worker.engine.runtime import DeviceLostError
        from worker.engine.sampler import PassCancelled

        start = time.monotonic()
        idle = start - idle_since if idle_since is not None else 0.0
        tickets = [ticket.id for ticket in chosen.tickets]
        self.send(("started", tickets))  # before the pass: it may kill us
        result: PassResult | Exception
        nested_before = self._nested_s
        try:
            result = self.engine.run_pass(chosen.chunks, should_stop=self._between_steps(chosen))
            if self._nested_s > nested_before:  # its time, without the interactive passes run inside it
                result = dataclasses.replace(result, seconds=max(1e-6, result.seconds - self._nested_s + nested_before))
        except DeviceLostError as exc:
            log.critical("the device is lost (%s); this engine process exits so that the worker starts a fresh one, "
                         "and the jobs it held go back to the worker to retry", exc)
            self.send(("fault", str(exc)))
            os._exit(DEVICE_LOST_EXIT)
        except Exception as exc:
            result = exc
        # Over, whatever its outcome: its jobs no longer risk this process through it (a job that dies with the
        # process later, waiting or being finished, did not kill it). Sent before any of their results, with the
        # pass's statistics if it ran: the worker records them while this process finishes the audio, not beside
        # its jobs' way to their results.
        self.send(("ended", tickets, None if isinstance(result, Exception) else self._statistics(chosen, result, idle)))
        if isinstance(result, PassCancelled):
            log.warning("pass of %d rows stopped: %s", chosen.plan.size, result)
            return
        if isinstance(result, Exception):
            log.warning("a pass of %d rows failed (%s: %s); its jobs are retried alone", chosen.plan.size,
                        type(result).__name__, result)
            with self._cond:
                self.scheduler.fail(chosen, result)
            return
        with self._cond:
            self.scheduler.complete(chosen, result.waves, result.seconds)
            self.scheduler.observe(chosen, result.seconds)
            finished = self.scheduler.finished()
            drained = len(self.scheduler) == 0 and self._preparing == 0
        if drained and len(finished) == 1 and self._outbox.empty():
            # a lone job with nothing else to run: this thread finishes and sends it, instead of waking the send
            # thread for it (a thread hand-over a lone job waited for; the send thread is there to overlap
            # finishing with the next pass, and there is none)
            self._deliver(finished[0])
        else:
            for ticket in finished:
                self._outbox.put(ticket)

    def _statistics(self, chosen: Pass, result: PassResult, idle: float) -> dict[str, Any] | None:
        """What the worker's metrics say about a pass; None if it cannot be said (the pass's end is sent anyway)."""
        try:
            return {"rows": chosen.plan.size, "padded_frames": result.padded_frames,
                    "frames": sum(item.frames for item in chosen.plan.items), "seconds": result.seconds,
                    "idle_s": idle, "recompiles": result.recompiles, "memory": _device_memory(self.engine.device),
                    "voices": len({ticket.requests[r].voice.sha256 or id(ticket.requests[r].voice.audio)
                                   for ticket, r, _ in chosen.entries})}
        except Exception:
            log.exception("the statistics of a pass of %d rows could not be taken", chosen.plan.size)
            return None

    def _send_loop(self) -> None:
        while True:
            self._deliver(self._outbox.get())

    def _deliver(self, item: Ticket | tuple[Any, ...]) -> None:
        message = item if isinstance(item, tuple) else self._result(item)
        try:
            self.send(message, _samples_apart(message))
        except (EOFError, OSError, BrokenPipeError):  # the worker is gone: nothing left to serve
            os._exit(0)

    def _result(self, ticket: Ticket) -> tuple[Any, ...]:
        """The message that settles a ticket. Finishing its audio (the cross-fade on the device, the copy to the host)
        can fail like any device work, an out-of-memory error above all: then this ticket fails, and is retried, and
        the thread goes on sending everyone else's results."""
        if ticket.cancelled:
            return ("cancelled", ticket.id)
        if ticket.error is not None:
            return ("failed", ticket.id, _portable(ticket.error))
        try:
            faults.before_finish(request.text for request in ticket.requests)
            started = time.monotonic()
            outputs = [self.engine.finish(prepared, [ticket.waves[(r, k)] for k in range(len(prepared.chunks))],
                                          ticket.seconds[r], pcm16=True)  # half the bytes over the pipe
                       for r, prepared in enumerate(ticket.prepared)]
            finish_s = time.monotonic() - started
            log.debug("ticket %d: prepared in %.2f ms, waited %.2f ms, passes %.2f ms, queued to send %.2f ms, "
                      "finished in %.2f ms", ticket.id, 1000 * ((ticket.prepared_at or 0) - ticket.submitted),
                      1000 * ((ticket.first_pass_at or 0) - (ticket.prepared_at or 0)),
                      1000 * ((ticket.done_at or 0) - (ticket.first_pass_at or 0)),
                      1000 * (started - (ticket.done_at or started)), 1000 * finish_s)
            for output in outputs:  # where this ticket's time went inside the engine process
                output.finish_s = finish_s / max(1, len(outputs))
                output.prepare_s = (ticket.prepared_at or ticket.submitted) - ticket.submitted
                output.wait_s = max(0.0, (ticket.first_pass_at or started) - (ticket.prepared_at or started))
                output.submitted_at = ticket.submitted
                output.sent_at = time.monotonic()
        except Exception as exc:
            log.exception("finishing the audio of a job failed; it is retried")
            return ("failed", ticket.id, _portable(TransientError(
                f"finishing the audio failed: {type(exc).__name__}: {exc}")))
        finally:
            ticket.waves.clear()  # the device memory of its chunks goes back, sent or not
        return ("done", ticket.id, outputs)


def _samples_apart(message: tuple[Any, ...]) -> list[memoryview]:
    """A "done" message's 16-bit samples, taken out of its outputs to follow it as raw payloads (never pickled: the
    worker reads them straight into their WAV file's buffer)."""
    payloads: list[memoryview] = []
    if message[0] != "done":
        return payloads
    for output in message[2]:
        if output.waveform is not None and output.waveform.dtype == np.int16 and output.waveform.size:
            samples = np.ascontiguousarray(output.waveform, dtype="<i2")
            output.waveform, output.pcm_bytes = None, samples.nbytes
            payloads.append(samples.data.cast("B"))
    return payloads


def _portable(error: BaseException) -> tuple[str, Any]:
    """An error the pipe can carry, by kind: the worker decides from the kind whether the job is retried."""
    if isinstance(error, BadInputError):
        return ("bad_input", error.as_dict())
    if isinstance(error, TransientError):
        return ("transient", str(error))
    return ("internal", f"{type(error).__name__}: {error}")


def _device_memory(device: torch.device) -> dict[str, int] | None:
    if device.type != "cuda":
        return None
    import torch

    return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
            "peak": torch.cuda.max_memory_allocated(device)}

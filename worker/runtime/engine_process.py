"""The engine process: one per GPU, spawned by the worker. It owns CUDA, the model and the pass scheduler.

The worker process (Celery, threads pool, no torch) does all the I/O: message handling, storage reads and writes, WAV
encoding. It hands requests to this process over a pipe and gets waveforms back. Here three threads keep the device
busy:

- *prepare*: references, chunking and tokens for new requests (CPU work, beside the running pass);
- *execute*: asks the scheduler for the next pass and runs it, back to back, while work is waiting;
- *send*: finishes requests (cross-fade on the device, one copy to the host) and sends the results.

The time between one pass's end and the next one's start while work was waiting is measured and reported with each
pass: it is what the GPU loses to everything that is not a pass.

A lost device (illegal memory access, device-side assert) poisons the CUDA context for good: the process reports it
and exits, and the worker starts a fresh one and retries the jobs it held. If the worker dies, the pipe closes and this
process exits at once.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from worker.errors import BadInputError, TransientError

log = logging.getLogger(__name__)

DEVICE_LOST_EXIT = 70


def main(conn, config: dict, env: dict[str, str], name: str, max_wait_s: float) -> None:
    """Entry point of the spawned process."""
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES and thread counts, before torch is imported
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("F5_ENGINE_LOG_LEVEL", "INFO"),
                        format=f"[%(asctime)s: %(levelname)s/{name}] %(message)s", force=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the worker, which stops this process
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


class EngineServer:
    def __init__(self, engine, conn, max_wait_s: float) -> None:
        from worker.runtime.scheduler import PassScheduler

        self.engine = engine
        self.conn = conn
        self.scheduler = PassScheduler(engine.planner, max_wait_s)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._incoming: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._preparing = 0
        self._cancelled_early: set[int] = set()

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def serve(self) -> None:
        for target, name in ((self._prepare_loop, "prepare"), (self._execute_loop, "execute"),
                             (self._send_loop, "send")):
            threading.Thread(target=target, name=f"f5-{name}", daemon=True).start()
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the worker is gone: nothing left to serve
                os._exit(0)
            kind = message[0]
            if kind == "submit":
                from worker.runtime.scheduler import Ticket

                _, ticket_id, requests, priority, alone = message
                with self._cond:
                    self._preparing += 1
                self._incoming.put(Ticket(ticket_id, requests, priority, alone))
            elif kind == "cancel":
                with self._cond:
                    if self.scheduler.cancel(message[1]) is None:
                        self._cancelled_early.add(message[1])
                    self._cond.notify_all()
            elif kind == "stop":
                os._exit(0)

    def _prepare_loop(self) -> None:
        while True:
            ticket = self._incoming.get()
            try:
                ticket.prepared = [self.engine.prepare(request) for request in ticket.requests]
            except Exception as exc:  # an engine fault, not bad input (that is kept per request)
                log.exception("preparing a request failed")
                ticket.error = TransientError(f"preparation failed: {type(exc).__name__}: {exc}")
            with self._cond:
                self._preparing -= 1
                if ticket.id in self._cancelled_early:
                    self._cancelled_early.discard(ticket.id)
                    ticket.cancelled = True
                self.scheduler.add(ticket)
                self._cond.notify_all()

    def _next(self):
        from worker.runtime.scheduler import Pass

        with self._cond:
            while True:
                for ticket in self.scheduler.finished():
                    self._outbox.put(ticket)
                decision = self.scheduler.next_pass()
                if isinstance(decision, Pass):
                    return decision
                self._cond.wait(timeout=decision)

    def _work_waiting(self) -> bool:
        with self._cond:
            return len(self.scheduler) > 0 or self._preparing > 0

    def _execute_loop(self) -> None:
        from worker.engine.runtime import DeviceLostError
        from worker.engine.sampler import PassCancelled
        from worker.runtime.scheduler import all_cancelled

        last_end, waited = None, False
        while True:
            chosen = self._next()
            start = time.monotonic()
            idle = (start - last_end) if (last_end is not None and waited) else 0.0
            tickets = [ticket.id for ticket in chosen.tickets]
            self.send(("started", tickets))  # before the pass: it may kill us
            try:
                result = self.engine.run_pass(chosen.chunks, should_stop=all_cancelled(chosen))
            except DeviceLostError as exc:
                log.critical("the device is lost (%s); this engine process exits so that the worker starts a "
                             "fresh one, and the jobs it held go back to the worker to retry", exc)
                self.send(("fault", str(exc)))
                os._exit(DEVICE_LOST_EXIT)
            except Exception as exc:
                result = exc
            # Over, whatever its outcome: its jobs no longer risk this process through it (a job that dies with the
            # process later, waiting or being finished, did not kill it). Sent before any of their results.
            self.send(("ended", tickets))
            if isinstance(result, PassCancelled):
                log.warning("pass of %d rows stopped: %s", chosen.plan.size, result)
                last_end, waited = time.monotonic(), self._work_waiting()
                continue
            if isinstance(result, Exception):
                log.warning("a pass of %d rows failed (%s: %s); its jobs are retried alone", chosen.plan.size,
                            type(result).__name__, result)
                with self._cond:
                    self.scheduler.fail(chosen, result)
                last_end, waited = time.monotonic(), self._work_waiting()
                continue
            with self._cond:
                self.scheduler.complete(chosen, result.waves, result.seconds)
            last_end = time.monotonic()
            waited = self._work_waiting()
            self._outbox.put(("pass", {
                "rows": chosen.plan.size, "padded_frames": result.padded_frames,
                "frames": sum(item.frames for item in chosen.plan.items), "seconds": result.seconds,
                "idle_s": idle, "recompiles": result.recompiles, "memory": _device_memory(self.engine.device)}))

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            try:
                self.send(item if isinstance(item, tuple) else self._result(item))
            except (EOFError, OSError, BrokenPipeError):
                os._exit(0)

    def _result(self, ticket) -> tuple:
        if ticket.cancelled:
            return ("cancelled", ticket.id)
        if ticket.error is not None:
            return ("failed", ticket.id, _portable(ticket.error))
        outputs = [self.engine.finish(prepared, [ticket.waves[(r, k)] for k in range(len(prepared.chunks))],
                                      ticket.seconds[r]) for r, prepared in enumerate(ticket.prepared)]
        return ("done", ticket.id, outputs)


def _portable(error: BaseException) -> tuple[str, Any]:
    """An error the pipe can carry, by kind: the worker decides from the kind whether the job is retried."""
    if isinstance(error, BadInputError):
        return ("bad_input", error.as_dict())
    if isinstance(error, TransientError):
        return ("transient", str(error))
    return ("internal", f"{type(error).__name__}: {error}")


def _device_memory(device) -> dict[str, int] | None:
    if device.type != "cuda":
        return None
    import torch

    return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
            "peak": torch.cuda.max_memory_allocated(device)}

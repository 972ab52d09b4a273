"""The worker's side of its engine processes: start them, hand them requests, supervise them.

One engine process per GPU (one on a CPU machine), spawned fresh (never forked: a forked CUDA context is broken). The
worker's task threads call ``submit``; each request goes to the engine with the least work outstanding, and the
thread waits for its waveforms while other threads keep the engine fed.

Supervision: when an engine process dies (a lost device, an OOM kill, a crash in native code), every job it held
fails with ``EngineLostError``, a transient error, so its task retries; a fresh engine process is started at once.
Jobs that were *in the running pass* when it died are reported to ``on_lost`` (the delivery ledger counts them:
a job that keeps killing its engine is dead-lettered). A job that outlives its time limit is cancelled in the engine
(the pass stops if nobody else needs it); an engine that does not let go by the hard limit is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.audio import WAV_HEADER_BYTES
from worker.engine.config import EngineConfig
from worker.engine.precision import Precision
from worker.engine.types import SynthesisOutput, SynthesisRequest
from worker.errors import (
    BadInputError,
    EngineBuildError,
    EngineLostError,
    JobTimeLimitError,
    SharedTimeLimitError,
    TransientError,
)
from worker.runtime.pipes import Duplex, line_pair

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 2.0, 5.0, 15.0, 30.0, 60.0)


@dataclass
class _Pending:
    ticket: int
    keys: list[str]  # job identities, for the delivery ledger
    requests: list[SynthesisRequest] = field(default_factory=list)  # kept to send again with their clips
    priority: int = 0
    alone: bool = False  # submitted to run in passes of its own
    shared: bool = False  # a pass holding it held other jobs too: past its time limit it is retried alone, not failed
    future: Future[list[SynthesisOutput]] = field(default_factory=Future)
    in_pass: bool = False  # a pass holding this ticket is running: if the process dies now, this job may be why
    started_at: float | None = None  # when its first pass started: a job's time limits count from there, not its wait


class EngineProcess:
    """One engine process and the thread that reads what it says."""

    def __init__(self, host: EngineHost, index: int, env: dict[str, str]) -> None:
        self.host = host
        self.index = index
        self.env = env
        self.name = f"Engine-{index}"
        self.pending: dict[int, _Pending] = {}
        self.info: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.build_error: str | None = None
        self.restarts = 0
        self._send_lock = threading.Lock()
        self.process: SpawnProcess | None = None  # set by start()
        self.conn: Duplex | None = None
        self.reader: threading.Thread | None = None
        self.restart_timer: threading.Timer | None = None  # a restart waiting out its backoff
        # Clip digests this process has been sent: later requests in that voice cross the pipe without the clip's
        # bytes. A fresh process starts with none; one that evicted a clip asks for it again ("voice_missing").
        self.voices: set[str] = set()

    def start(self) -> None:
        self.voices = set()
        context = _spawn_context()
        parent, child = line_pair(context)  # two pipes, each wide enough for a job's audio
        from worker.runtime.engine_process import main

        process = context.Process(
            target=main, name=self.name, daemon=True,
            args=(child, self.host.config.model_dump(), self.env, self.name, self.host.max_wait_s))
        process.start()
        child.close()
        self.process, self.conn = process, parent
        self.ready.clear()
        self.reader = threading.Thread(target=self._read, args=(parent, process), name=f"f5-{self.name}-reader",
                                       daemon=True)
        self.reader.start()

    @property
    def load(self) -> int:
        return len(self.pending)

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            if self.conn is None:
                raise BrokenPipeError(f"{self.name} has not been started")
            self.conn.send(message)

    def _read(self, conn: Duplex, process: SpawnProcess) -> None:
        while True:
            try:
                message = conn.recv()
                if message[0] == "done":
                    _receive_samples(conn, message[2])
            except (EOFError, OSError):
                break
            except Exception:  # a line out of step (a message or payload that cannot be read): the engine is replaced
                log.exception("%s sent what cannot be read; stopping it", self.name)
                with contextlib.suppress(ProcessLookupError):  # billiard's processes (a prefork child's) lack kill()
                    os.kill(process.pid, signal.SIGKILL)  # type: ignore[arg-type]  # started: it has a pid
                break
            try:
                self._handle(message)
            except Exception:  # a callback's fault (the ledger, metrics): this thread keeps reading the engine
                log.exception("%s: handling a %r message failed", self.name, message[0])
        process.join(5)
        self.host._engine_died(self, process.exitcode)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self.info = message[1]
            log.info("%s ready (pid %s, %s, %s, %d frames per pass)", self.name, self.info["pid"],
                     self.info["device"], self.info["precision"], self.info["frame_budget"])
            self.ready.set()
            self.host._on_ready(self)
        elif kind == "build_failed":
            self.build_error = message[1]
        elif kind == "started":
            if keys := self._mark_in_pass(message[1], True):
                self.host.on_started(keys)
        elif kind == "ended":  # (tickets, the pass's statistics, or None if it failed)
            if keys := self._mark_in_pass(message[1], False):
                self.host.on_pass_ended(keys)
            if message[2] is not None:
                self.host.on_pass(message[2])
        elif kind == "fault":
            log.critical("%s lost its device: %s", self.name, message[1])
        elif kind == "voice_missing":
            self._send_again_with_clips(message[1])
        elif kind in ("done", "failed", "cancelled"):
            self._settle(message)

    def _send_again_with_clips(self, ticket: int) -> None:
        """The process no longer holds a clip one of this ticket's requests names by digest: send them whole."""
        with self.host._lock:
            pending = self.pending.get(ticket)
        if pending is None:
            return
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):
            self.send(("submit", [(pending.ticket, pending.requests, pending.priority, pending.alone)]))

    def _mark_in_pass(self, tickets: list[int], in_pass: bool) -> list[str]:
        """Mark these tickets' pass as running (or over); the job ids whose state changed."""
        keys, now = [], time.monotonic()
        for ticket in tickets:
            pending = self.pending.get(ticket)
            if pending is not None and in_pass and len(tickets) > 1:
                pending.shared = True
            if pending is not None and pending.in_pass != in_pass:
                pending.in_pass = in_pass
                if in_pass and pending.started_at is None:
                    pending.started_at = now
                keys += pending.keys
        return keys

    def _settle(self, message: tuple[Any, ...]) -> None:
        with self.host._lock:
            pending = self.pending.pop(message[1], None)
        if pending is None:
            return
        if pending.in_pass:  # settled before its pass's end (cancelled, and settled by a pass run inside its own)
            self.host.on_pass_ended(pending.keys)
        kind = message[0]
        if kind == "done":
            for output in message[2]:
                output.received_at = time.monotonic()
            pending.future.set_result(message[2])
        elif kind == "cancelled":
            pending.future.set_exception(JobTimeLimitError("the job was abandoned at its time limit"))
        else:
            pending.future.set_exception(_error(message[2]))


def _receive_samples(conn: Duplex, outputs: list[SynthesisOutput]) -> None:
    """Read the samples that follow a "done" message (``pcm_bytes`` each, in order) into their WAV files' buffers,
    past the header the runner writes there: the one copy of a job's audio in the worker on its way in."""
    for output in outputs:
        if output.pcm_bytes:
            wav = bytearray(WAV_HEADER_BYTES + output.pcm_bytes)
            conn.recv_into(memoryview(wav)[WAV_HEADER_BYTES:])
            output.wav = wav
            output.waveform = np.frombuffer(wav, dtype="<i2", offset=WAV_HEADER_BYTES)


def _spawn_context() -> Any:
    """multiprocessing's ``spawn`` context; in a prefork pool child, billiard's (Celery's fork of multiprocessing).

    A pool child is daemonic, and billiard has made it multiprocessing's current process: multiprocessing refuses to
    start children from it, and will not pickle its authentication key into the new process's preparation data.
    billiard's own ``spawn`` does both, the same way (a fresh interpreter, the same pipes)."""
    if multiprocessing.current_process().daemon:
        import billiard

        return billiard.get_context("spawn")
    return multiprocessing.get_context("spawn")


def _error(portable: tuple[str, Any]) -> BaseException:
    kind, detail = portable
    if kind == "bad_input":
        return BadInputError(detail["code"], detail["message"], detail["field"])
    if kind == "transient":
        return TransientError(detail)
    return RuntimeError(detail)


class EngineHost:
    """Thread-safe front of the worker's engine processes (``SynthesisEngine``-like: ``synthesize``)."""

    def __init__(self, config: EngineConfig, devices: Sequence[str | None], *, max_wait_s: float,
                 on_started: Callable[[list[str]], object] = lambda keys: None,
                 on_pass_ended: Callable[[list[str]], object] = lambda keys: None,
                 on_lost: Callable[[list[str]], object] = lambda keys: None,
                 on_pass: Callable[[dict[str, Any]], object] = lambda stats: None) -> None:
        self.config = config
        self.max_wait_s = max_wait_s
        self.on_started, self.on_pass_ended = on_started, on_pass_ended
        self.on_lost, self.on_pass = on_lost, on_pass
        self._tickets = itertools.count(1)
        self._lock = threading.Lock()
        self._closing = False
        self._serving = False  # set once every engine has started: from then on a dead engine is replaced
        self.engines = [EngineProcess(self, index, self._env(device, config.cpu_threads))
                        for index, device in enumerate(devices)]
        self.started_at = time.monotonic()

    @staticmethod
    def _env(device: str | None, cpu_threads: int = 1) -> dict[str, str]:
        env = {"F5_ENGINE_LOG_LEVEL": logging.getLevelName(logging.getLogger().getEffectiveLevel())}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        else:  # a CPU engine: its own share of the cores (torch reads these when it is imported)
            env.update({"OMP_NUM_THREADS": str(cpu_threads), "MKL_NUM_THREADS": str(cpu_threads)})
        return env

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float) -> None:
        """Start every engine and wait until each is built and warmed up (or one fails to build)."""
        for engine in self.engines:
            engine.start()
        deadline = time.monotonic() + timeout_s
        for engine in self.engines:
            process, reader = engine.process, engine.reader
            assert process is not None and reader is not None  # started above
            while not engine.ready.wait(0.2):
                if engine.build_error or not process.is_alive():
                    reader.join(5)  # it may still be reading the reason the process gave
                    self.close()
                    raise EngineBuildError(engine.build_error or f"{engine.name} exited with code "
                                           f"{process.exitcode} while starting")
                if time.monotonic() > deadline:
                    self.close()
                    raise EngineBuildError(f"{engine.name} did not finish building within {timeout_s:.0f} s "
                                           "(WORKER_PROC_ALIVE_TIMEOUT)")
        self._serving = True

    def close(self) -> None:
        self._closing = True
        for engine in self.engines:
            if engine.restart_timer is not None:
                engine.restart_timer.cancel()
        for engine in self.engines:
            if engine.process is not None and engine.process.is_alive():
                engine.process.terminate()
        for engine in self.engines:
            if engine.process is not None:
                engine.process.join(10)

    def _on_ready(self, engine: EngineProcess) -> None:
        if engine.restarts:
            log.info("%s is back after %d restart(s)", engine.name, engine.restarts)

    def _engine_died(self, engine: EngineProcess, exitcode: int | None) -> None:
        engine.ready.clear()
        with self._lock:
            lost, engine.pending = engine.pending, {}
        for pending in lost.values():
            if pending.in_pass and self._closing:  # stopped by us (shutdown): not the job's fault
                self.on_pass_ended(pending.keys)
            elif pending.in_pass:
                self.on_lost(pending.keys)
            pending.future.set_exception(EngineLostError(
                f"{engine.name} stopped (exit code {exitcode}) while this job was "
                + ("in its running pass" if pending.in_pass else "waiting in it")))
        if self._closing or not self._serving:  # at start-up, start() reports the failure and the worker stops
            return
        delay = RESTART_BACKOFF_S[min(engine.restarts, len(RESTART_BACKOFF_S) - 1)] if engine.build_error else 0.0
        log.error("%s (pid %s) exited with code %s; %d job(s) it held will be retried; starting a fresh one%s",
                  engine.name, engine.process.pid if engine.process else None, exitcode, len(lost),
                  f" in {delay:.0f} s" if delay else "")
        engine.restarts += 1
        engine.build_error = None
        if delay:
            engine.restart_timer = threading.Timer(delay, self._restart, args=(engine,))
            engine.restart_timer.daemon = True  # never waited for at exit; close() cancels it
            engine.restart_timer.start()
        else:
            engine.start()

    def _restart(self, engine: EngineProcess) -> None:
        """A restart that waited out its backoff: not if the worker has started closing meanwhile (the process would
        outlive it)."""
        if not self._closing:
            engine.start()

    # ------------------------------------------------------------------------------------------- serving

    @property
    def info(self) -> dict[str, Any]:
        for engine in self.engines:
            if engine.info is not None:
                return engine.info
        raise EngineBuildError("no engine has started yet")

    @property
    def model_name(self) -> str:
        return str(self.info["model"])

    @property
    def precision(self) -> Precision:
        precision: Precision = self.info["precision"]
        return precision

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])

    def ready_engines(self) -> int:
        return sum(1 for engine in self.engines if engine.ready.is_set())

    def submit(self, requests: Sequence[SynthesisRequest], keys: Sequence[str], *, priority: int = 0,
               alone: bool = False, wait_for_engine_s: float = 120.0) -> tuple[EngineProcess, _Pending]:
        return self.submit_many([(requests, keys, alone)], priority=priority, wait_for_engine_s=wait_for_engine_s)[0]

    def submit_many(self, tickets: Sequence[tuple[Sequence[SynthesisRequest], Sequence[str], bool]], *,
                    priority: int = 0, wait_for_engine_s: float = 120.0) -> list[tuple[EngineProcess, _Pending]]:
        """Hand several tickets (requests, job identities, alone) to one engine in one message, so that its pass
        scheduler sees them all arrive together: a batch's jobs are gathered into one pass, not started one by one.
        A clip the engine was already sent travels as its digest only."""
        deadline = time.monotonic() + wait_for_engine_s
        while True:
            with self._lock:
                ready = [engine for engine in self.engines if engine.ready.is_set()]
                if ready:
                    engine = min(ready, key=lambda e: e.load)
                    pendings = []
                    for requests, keys, alone in tickets:
                        pending = _Pending(next(self._tickets), list(keys), list(requests), priority, alone)
                        engine.pending[pending.ticket] = pending
                        pendings.append(pending)
                    wire = [(p.ticket, self._light(engine, p.requests), priority, p.alone) for p in pendings]
                    break
            if time.monotonic() > deadline:
                raise EngineLostError(f"no engine process is ready after {wait_for_engine_s:.0f} s")
            time.sleep(0.1)
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):  # dying: its reader fails the tickets
            engine.send(("submit", wire))
        return [(engine, pending) for pending in pendings]

    @staticmethod
    def _light(engine: EngineProcess, requests: list[SynthesisRequest]) -> list[SynthesisRequest]:
        """Requests as they cross the pipe: each clip's bytes only the first time this process sees its digest."""
        out = []
        for request in requests:
            digest = request.voice.sha256
            if digest is not None and digest in engine.voices:
                request = dataclasses.replace(request, voice=request.voice.without_audio())
            elif digest is not None:
                engine.voices.add(digest)
            out.append(request)
        return out

    def wait(self, submitted: tuple[EngineProcess, _Pending], timeout_s: float | None = None,
             hard_timeout_s: float | None = None) -> list[SynthesisOutput]:
        """The waveforms of a submitted ticket, or its error (see :meth:`wait_many`)."""
        outcome = self.wait_many([submitted], timeout_s, hard_timeout_s)[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def wait_many(self, submitted: Sequence[tuple[EngineProcess, _Pending]], timeout_s: float | None = None,
                  hard_timeout_s: float | None = None) -> list[list[SynthesisOutput] | BaseException]:
        """The waveforms of each submitted ticket, or its error (``EngineLostError``, a time limit, bad input).

        The limits count from each job's first pass: waiting for a place in the engine's passes is not running. Past
        ``timeout_s`` a job is cancelled in its engine, at once and whatever its companions are doing (a batch's jobs
        are cancelled together, so the pass they share stops at its next step); an engine that still holds a job
        ``hard_timeout_s`` after its first pass is replaced. A job that overran while it shared passes gets
        ``SharedTimeLimitError`` (retried, alone); one that overran alone, ``JobTimeLimitError``."""
        grace = None if hard_timeout_s is None or timeout_s is None else max(1.0, hard_timeout_s - timeout_s)
        results: list[list[SynthesisOutput] | BaseException | None] = [None] * len(submitted)
        cancelled: dict[int, float] = {}
        killed: set[int] = set()
        while any(result is None for result in results):
            now = time.monotonic()
            for index, (engine, pending) in enumerate(submitted):
                if results[index] is not None:
                    continue
                if pending.future.done():
                    results[index] = self._settled(pending, timeout_s, index in cancelled)
                elif (timeout_s is not None and pending.started_at is not None and index not in cancelled
                      and now >= pending.started_at + timeout_s):
                    cancelled[index] = now
                    with contextlib.suppress(OSError, EOFError, BrokenPipeError):
                        engine.send(("cancel", pending.ticket))
                elif index in cancelled and grace is not None and now >= cancelled[index] + grace:
                    if id(engine) not in killed:
                        killed.add(id(engine))
                        log.error("%s did not let go of a job past its hard time limit; replacing the process",
                                  engine.name)
                        pid = engine.process.pid if engine.process is not None else None
                        if pid is not None:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                    results[index] = self._time_limit(pending, timeout_s)
            waiting = [pending.future for (_, pending), result in zip(submitted, results, strict=True)
                       if result is None]
            if waiting:
                futures_wait(waiting, timeout=0.25, return_when=FIRST_COMPLETED)
        return [result for result in results if result is not None]

    def _settled(self, pending: _Pending, timeout_s: float | None, cancelled: bool) -> Any:
        try:
            return pending.future.result()
        except JobTimeLimitError:
            return self._time_limit(pending, timeout_s) if cancelled else JobTimeLimitError(
                "the job was abandoned at its time limit")
        except BaseException as exc:
            return exc

    @staticmethod
    def _time_limit(pending: _Pending, timeout_s: float | None) -> BaseException:
        limit = f"{timeout_s:.0f} s" if timeout_s is not None else "its time limit"
        if pending.shared and not pending.alone:
            return SharedTimeLimitError(f"the job did not finish within its time limit of {limit} while it shared "
                                        "passes with other jobs; it is retried in passes of its own")
        return JobTimeLimitError(f"the job did not finish within its time limit of {limit}, running alone")

    def synthesize(self, requests: Sequence[SynthesisRequest], keys: Sequence[str] = (), *, priority: int = 0,
                   alone: bool = False, timeout_s: float | None = None,
                   hard_timeout_s: float | None = None) -> list[SynthesisOutput]:
        keys = list(keys) or [str(i) for i in range(len(requests))]
        return self.wait(self.submit(requests, keys, priority=priority, alone=alone), timeout_s, hard_timeout_s)

"""Worker lifecycle on Celery signals: pool and concurrency, preflight, the engine processes, shutdown.

A synthesis worker is one Celery process with the ``threads`` pool (the app's default for that role), plus one engine
process per GPU that it spawns and supervises (``worker.runtime.host``). Its threads take many messages at once, so
the engines can fill passes across messages, whether jobs come as producer batches or one by one; the I/O of each job
runs in its thread while the engines compute. The Celery process never imports torch and never touches CUDA.

The engines are started before the consumer: a worker that cannot build its engine exits non-zero at once with the
reason, instead of taking jobs it cannot run.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

from celery import signals
from celery.platforms import EX_FAILURE
from celery.worker import WorkController

from worker.broker.visibility import RenewVisibility
from worker.celery_app import app, consumer_transport, settings
from worker.runtime.preflight import engine_problems

log = logging.getLogger(__name__)

# Every worker renews the visibility of the messages it holds (worker.broker.visibility).
app.steps["consumer"].add(RenewVisibility)

GATHERING_POOLS = ("threads",)
SERVING_POOLS = ("threads", "solo", "prefork")
# prefork (given as --pool processes: see _asks_for_prefork): each child process starts its own engine process when it
# starts (one job at a time per child, as the first design ran); kept for CPU hosts and comparisons, the threads pool
# is the default.
PER_CHILD_POOLS = ("prefork",)


class _Startup:
    """Parent-side state: the worker object, and whether the engines failed to start."""

    controller: WorkController | None = None
    engine_failed: ctypes.c_byte | None = None


def _pool_name(pool: object) -> str:
    """``-P`` as given (a name) or as resolved (a class, named by its module): 'prefork', 'threads', 'solo', …"""
    name = str(pool if isinstance(pool, str) else getattr(pool, "__module__", "")).rsplit(".", 1)[-1]
    # the threads pool lives in celery.concurrency.thread; "processes" is Celery's other name for prefork
    return {"thread": "threads", "processes": "prefork"}.get(name, name)


def _asks_for_prefork(argv: list[str]) -> bool:
    """Whether the command line names the prefork pool, which Celery cannot tell from no pool given: it then takes
    the configured ``worker_pool`` (threads)."""
    for index, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--pool=") else arg[2:] if arg.startswith("-P") else None
        if arg in ("-P", "--pool") and index + 1 < len(argv):
            value = argv[index + 1]
        if value == "prefork":
            return True
    return False


def _children_share_the_first_gpu() -> bool:
    """A prefork child builds its engine on the default device: on a GPU host (no ``F5_DEVICE``), the first GPU."""
    from worker.runtime.gpus import visible_gpus

    return not settings.engine.device and bool(visible_gpus())


def _synthesis() -> bool:
    return settings.broker.role == "synthesis"


def _qa() -> bool:
    return settings.broker.role == "qa"


@signals.worker_init.connect
def remember_worker(sender: WorkController, **_: Any) -> None:
    _Startup.controller = sender
    _Startup.engine_failed = multiprocessing.RawValue(ctypes.c_byte, 0)
    # Hand the GIL over within half a millisecond (Python's default is 5 ms): a message, a result from an engine or a
    # finished upload wakes a thread that should not wait for another one's time slice (see the pipeline bench).
    sys.setswitchinterval(0.0005)


@signals.worker_ready.connect
def log_ready(**_: Any) -> None:
    log.info("worker ready for jobs (f5-batch code from %s)", os.path.dirname(os.path.dirname(__file__)))


@signals.worker_shutting_down.connect
@signals.worker_shutdown.connect  # again at the very end: a warm shutdown sets the exit code to 0 in between
def exit_non_zero_after_engine_failure(**_: Any) -> None:
    if _Startup.engine_failed is not None and _Startup.engine_failed.value and _Startup.controller is not None:
        _Startup.controller.exitcode = EX_FAILURE


@signals.celeryd_init.connect
def default_concurrency(conf: Any, options: dict[str, Any], **_: Any) -> None:
    """Synthesis: enough tasks in flight to fill two passes per engine (one running, one gathering), unless
    -c/--concurrency says otherwise. Assembly: Celery's default."""
    if options.get("concurrency") is not None or conf.get("worker_concurrency"):
        return
    if _qa():  # enough checks in flight to fill the recogniser's batches
        conf.worker_concurrency = 2 * settings.qa.batch_size
        return
    if not _synthesis():
        return
    from worker.runtime.context import engine_devices, rows_per_pass

    if _pool_name(options.get("pool_cls")) in PER_CHILD_POOLS:  # each child holds a model of its own
        # a child per core's engine on a CPU; one on a GPU host, where every child's engine would share the first GPU
        conf.worker_concurrency = 1 if _children_share_the_first_gpu() else len(engine_devices(settings))
        return
    conf.worker_concurrency = max(4, 2 * rows_per_pass(settings) * len(engine_devices(settings)))


@signals.celeryd_init.connect
def consume_through_the_hardened_transport(conf: Any, **_: Any) -> None:
    """Workers only (before the consumer connects); clients and Flower keep kombu's stock Redis transport."""
    transport = consumer_transport(settings)
    if transport:
        conf.broker_transport = transport


@signals.worker_init.connect
def preflight(sender: Any, **_: Any) -> None:  # the WorkController; its stubs lack pool_cls
    if not _synthesis():
        return
    problems = engine_problems(settings.engine)
    pool = _pool_name(sender.pool_cls)
    if pool not in SERVING_POOLS:
        problems.append(f"the {pool} pool cannot serve synthesis: use the default (threads), -P solo or -P processes "
                        "(prefork)")
    if pool != "prefork" and _asks_for_prefork(sys.argv):
        log.warning("--pool prefork names Celery's default pool, which this app sets to %s: this worker runs the %s "
                    "pool. For prefork children, each with an engine process of its own, give --pool processes.",
                    pool, pool)
    if problems:
        for problem in problems:
            log.critical("cannot start: %s", problem)
        raise SystemExit(1)  # not an Exception: Celery's signal dispatch lets it end the worker


@signals.celeryd_after_setup.connect
def start_recogniser(sender: str, instance: Any, **_: Any) -> None:
    """A QA worker builds its recogniser before it takes any message; one that cannot (package missing, model not
    found) stops the worker with the fix, instead of failing takes one by one."""
    if not _qa():
        return
    from worker.runtime.qa_context import build_qa_context, set_qa_context

    try:
        set_qa_context(build_qa_context(settings))
    except Exception as exc:
        if _Startup.engine_failed is not None:
            _Startup.engine_failed.value = 1
        log.critical("cannot start the QA worker: %s", exc)
        raise SystemExit(1) from None


@signals.celeryd_after_setup.connect
def start_engines(sender: str, instance: Any, **_: Any) -> None:
    """Start the engine processes (logging is set up by now), before the consumer takes any message."""
    if not _synthesis():
        return
    from worker.runtime.context import build_context, set_context

    pool = _pool_name(instance.pool_cls)
    if pool in PER_CHILD_POOLS:
        log.info("the %s pool: every child process starts its own engine process", pool)
        if _children_share_the_first_gpu():
            log.warning("every %s child's engine runs on the first visible GPU; the default (threads) pool runs one "
                        "engine per GPU and gathers jobs across messages", pool)
        return
    if pool not in GATHERING_POOLS:
        log.warning("the %s pool runs one message at a time: passes hold only that message's jobs. The default "
                    "(threads) pool gathers jobs across messages.", pool)
    try:
        context = build_context(settings, gather=pool in GATHERING_POOLS)
    except Exception as exc:
        if _Startup.engine_failed is not None:
            _Startup.engine_failed.value = 1
        log.critical("could not build the engine, stopping the worker: %s", exc)
        raise SystemExit(1) from None
    set_context(context)
    log.info("engine ready in %d engine process(es); %d tasks in flight", len(context.engines.engines),
             instance.concurrency)


@signals.worker_process_init.connect
def start_child_engine(**_: Any) -> None:
    """A prefork child: one engine process of its own, before it takes a job (bounded by WORKER_PROC_ALIVE_TIMEOUT)."""
    if not _synthesis():
        return
    from worker.runtime.context import build_context, set_context

    try:
        context = build_context(settings, gather=False, devices=[None], acknowledges=False)
    except Exception as exc:
        # Celery logs and swallows what a worker_process_init handler raises, and the child would then take jobs
        # it cannot run: stop the whole worker instead, non-zero (the parent reads the flag when it shuts down)
        log.critical("could not build the engine of pool child %d, stopping the worker: %s", os.getpid(), exc)
        if _Startup.engine_failed is not None:
            _Startup.engine_failed.value = 1
        os.kill(os.getppid(), signal.SIGTERM)
        os._exit(EX_FAILURE)
    set_context(context)
    log.info("engine ready in 1 engine process(es) for pool child %d; one task at a time", os.getpid())


@signals.worker_process_shutdown.connect
def stop_child_engine(**_: Any) -> None:
    if not _synthesis():
        return
    from worker.runtime.context import _context

    if _context is not None:
        _context.engines.close()


@signals.worker_shutdown.connect
def stop_engines(**_: Any) -> None:
    if not _synthesis():
        return
    from worker.runtime.context import _context

    if _context is not None:
        _context.engines.close()

"""Worker lifecycle on Celery signals: concurrency, preflight, one engine per child process, GPU pinning.

The parent process never imports torch or touches CUDA: children forked from a parent with a CUDA context inherit a
broken one. Each prefork child pins itself to one GPU (child i to GPU i) before it imports torch, builds its engine
and warms it up. A child whose engine cannot be built stops the whole worker with a non-zero exit code, so that a
worker never sits on the queue taking jobs it cannot run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal

from celery import signals
from celery.platforms import EX_FAILURE

from worker.app import consumer_transport, settings
from worker.runtime.gpus import pin_child_to_gpu, visible_gpus
from worker.runtime.preflight import engine_problems

log = logging.getLogger(__name__)


class _Startup:
    """Parent-side state shared with the pool: the worker object, and a flag children raise if their engine fails.

    The flag lives in shared memory created before the pool forks, so a child can tell the parent why it is being
    asked to stop; the parent then exits with status 1 (Celery's cold shutdown alone would exit 0).
    """

    controller = None
    engine_failed = None


def _pool_name(pool) -> str:
    """``-P`` as given (a name) or as resolved (a class, named by its module): 'prefork', 'threads', 'solo', …"""
    return str(pool if isinstance(pool, str) else getattr(pool, "__module__", ""))


@signals.worker_init.connect
def remember_worker(sender, **_) -> None:
    _Startup.controller = sender
    _Startup.engine_failed = multiprocessing.RawValue("b", 0)


@signals.worker_ready.connect
def log_ready(**_) -> None:
    log.info("worker ready for jobs (f5-batch code from %s)", os.path.dirname(os.path.dirname(__file__)))


@signals.worker_shutting_down.connect
def exit_non_zero_after_engine_failure(**_) -> None:
    if _Startup.engine_failed is not None and _Startup.engine_failed.value and _Startup.controller is not None:
        _Startup.controller.exitcode = EX_FAILURE


@signals.celeryd_init.connect
def default_concurrency_to_gpu_count(conf, options, **_) -> None:
    """One process per GPU unless -c/--concurrency or worker_concurrency says otherwise."""
    if options.get("concurrency") is None and not conf.get("worker_concurrency"):
        conf.worker_concurrency = max(1, len(visible_gpus()))


@signals.celeryd_init.connect
def consume_through_the_hardened_transport(conf, **_) -> None:
    """Workers only (before the consumer connects); clients and Flower keep kombu's stock Redis transport."""
    transport = consumer_transport(settings)
    if transport:
        conf.broker_transport = transport


def _synthesis() -> bool:
    return settings.broker.role == "synthesis"


@signals.worker_init.connect
def preflight(sender, **_) -> None:
    if not _synthesis():
        return
    problems = engine_problems(settings.engine)
    if problems:
        for problem in problems:
            log.critical("cannot start: %s", problem)
        raise SystemExit(1)  # not an Exception: Celery's signal dispatch lets it end the worker


@signals.celeryd_after_setup.connect
def build_engine_in_main_process(sender, instance, **_) -> None:
    """Thread and solo pools run tasks in this process: build the engine here (logging is set up by now), before
    the consumer starts."""
    pool = _pool_name(instance.pool_cls)
    if "prefork" in pool or not _synthesis():
        return
    from worker.runtime.context import build_context, set_context

    threads = "thread" in pool
    try:
        set_context(build_context(settings, concurrent_tasks=threads))
    except Exception as exc:
        log.critical("could not build the engine, stopping the worker: %s", exc)
        raise SystemExit(1) from None
    log.info("engine ready in pool process %d", 0)


@signals.worker_process_init.connect
def build_engine(**_) -> None:
    if not _synthesis():
        return
    from billiard.process import current_process

    from worker.runtime.context import build_context, set_context

    index = getattr(current_process(), "index", 0) or 0
    try:
        if not settings.engine.device:
            gpu = pin_child_to_gpu(index)
            if gpu is not None:
                log.info("pool process %d uses GPU %s", index, gpu)
        set_context(build_context(settings, concurrent_tasks=False, metrics_index=index))
        log.info("engine ready in pool process %d", index)
    except BaseException as exc:
        log.critical("pool process %d could not build the engine, stopping the worker: %s", index, exc,
                     exc_info=not isinstance(exc, (ValueError, RuntimeError)))
        if _Startup.engine_failed is not None:
            _Startup.engine_failed.value = 1
        os.kill(os.getppid(), signal.SIGQUIT)  # cold shutdown of the whole worker
        os._exit(1)

"""The Celery app, configured from settings. Imports no torch: Flower and clients load this module too.

Why each delivery setting is what it is (see also the design notes):
- ``task_acks_late`` + prefetch 1 per thread: a job is acknowledged only after its audio is stored, so a worker
  killed mid-job loses nothing; the redelivered job is idempotent (content-derived key and seed).
- Redis ``visibility_timeout`` above the hard time limit, for broker and result backend alike: otherwise Redis hands
  a job that is still running to a second worker.
- The ``threads`` pool for synthesis workers: many messages in flight in one process, so the engine processes can
  gather their jobs into full passes, and the jobs' I/O overlaps the passes. (The CPU assembler keeps prefork.)
- ``worker_proc_alive_timeout`` raised: the engines' build and warm-up is bounded by it.
- Events, sent events and STARTED state on, for Flower. JSON only: pickle is refused on every path.
- Redis Sentinel: ``sentinel://`` URLs for the broker and the results, with the master's name from
  ``F5_SENTINEL_MASTER``; kombu and Celery follow a failover by themselves.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue

from worker.constants import (
    DEFAULT_CPU_QUEUE,
    TASK_ASSEMBLE_CHAPTER,
    TASK_QA_CHECK,
    TASK_SYNTHESIZE,
    TASK_SYNTHESIZE_BATCH,
)
from worker.settings import Settings, load_settings


def consumer_transport(settings: Settings) -> str | None:
    """The kombu transport a *worker* consumes Redis through: kombu's own, hardened against non-JSON queue items
    (see ``worker.broker.transport``). Set only in worker processes (``celeryd_init``): Flower derives its broker
    client from the connection URL, and a custom transport name there breaks its queue-length API."""
    url = settings.broker.broker_url
    if url.startswith(("redis://", "rediss://")):
        return "worker.broker.transport:Transport"
    if url.startswith("sentinel://"):
        return "worker.broker.transport:SentinelTransport"
    return None


def publish_through_the_hardened_transport(app: Celery, settings: Settings) -> Celery:
    """Clients that publish jobs (the producer, the gateway) use the workers' transport too: its publish wakes idle
    workers at once (``worker.broker.fetch``). Not the default for the app: Flower must keep kombu's own."""
    transport = consumer_transport(settings)
    if transport:
        app.conf.broker_transport = transport
    return app


def _sentinel_options(settings: Settings, url: str) -> dict[str, Any]:
    master = settings.broker.sentinel_master
    if not url.startswith("sentinel://"):
        return {}
    if not master:
        raise ValueError("a sentinel:// URL needs the name of the master: set F5_SENTINEL_MASTER")
    return {"master_name": master}


def result_backend_url(url: str) -> str:
    """Redis results through our patient backends (``worker.broker.results``): a Redis that is briefly out of memory
    delays a job's result instead of losing the job. Other backends are left as given."""
    for schemes, backend in ((("redis://", "rediss://"), "RedisBackend"), (("sentinel://",),
                                                                                     "SentinelBackend")):
        if url.startswith(schemes):
            return f"worker.broker.results:{backend}+{url}"
    return url


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = settings.broker
    if broker.visibility_timeout <= broker.task_time_limit:
        raise ValueError(f"VISIBILITY_TIMEOUT ({broker.visibility_timeout}) must exceed TASK_TIME_LIMIT "
                         f"({broker.task_time_limit}), or Redis redelivers jobs that are still running")
    transport = {
        "visibility_timeout": broker.visibility_timeout,
        # Sweep for messages of dead workers often enough that they come back soon after the visibility timeout
        # (kombu's default scans only every ~100 s).
        "unacked_restore_interval": max(1, min(10, broker.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        # The hardened worker transport takes messages atomically and asks this often while the queue is empty.
        "idle_poll_interval": broker.broker_poll_ms / 1000,
        # Live workers renew what they hold this often (worker.broker.visibility); resume reads it to tell a dead
        # worker's messages (not renewed) from a live one's.
        "held_renew_interval": min(broker.renew_s, broker.visibility_timeout / 4),
        "socket_connect_timeout": 10,
        "socket_keepalive": True,
        # Priorities 0-9 on Redis (0 is served first): interactive requests before books.
        "queue_order_strategy": "priority",
        "priority_steps": list(range(10)),
        "sep": ":",
        **_sentinel_options(settings, broker.broker_url),
    }
    return {
        "broker_url": broker.broker_url,
        "result_backend": result_backend_url(broker.resolved_result_backend),
        # Result writes that Redis refuses for a while (out of memory, loading, failing over) are retried (about two
        # minutes at most), not turned into an internal error that acknowledges the job away.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_base_sleep_between_retries_ms": 100,
        "result_backend_max_sleep_between_retries_ms": 5000,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": broker.visibility_timeout,
                                             **_sentinel_options(settings, broker.resolved_result_backend)},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # synthesis and QA: many messages in flight in one process (passes, transcription batches); assembly: prefork
        "worker_pool": "threads" if broker.role in ("synthesis", "qa") else "prefork",
        # Keep running jobs when the broker connection drops: cancelling leaves a job to the visibility timeout (an
        # hour by default), and a message kombu's BRPOP fallback handed out just then may not be in the unacked hash
        # at all. Finishing it costs at most a redelivery, which the worker skips because the output key exists (see
        # tests/faults/test_redis_restart.py).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_time_limit": broker.task_time_limit,
        "task_soft_time_limit": broker.task_soft_time_limit,
        "worker_proc_alive_timeout": broker.proc_alive_timeout,
        "worker_send_task_events": True,
        # task events for Flower are published a moment after they happen, off a job's way (worker.broker.consumer)
        "worker_consumer": "worker.broker.consumer:Consumer",
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": broker.result_expires,
        "task_default_queue": broker.queue,
        # GPU workers consume only the synthesis queue; assembly goes to a CPU worker started with -Q f5tts-cpu.
        # What a worker consumes without -Q: its role's queue.
        "task_queues": [Queue({"qa": settings.qa.queue, "assembler": DEFAULT_CPU_QUEUE}.get(broker.role,
                                                                                            broker.queue))],
        "task_routes": {
            TASK_SYNTHESIZE: {"queue": broker.queue},
            TASK_SYNTHESIZE_BATCH: {"queue": broker.queue},
            TASK_ASSEMBLE_CHAPTER: {"queue": DEFAULT_CPU_QUEUE},
            TASK_QA_CHECK: {"queue": settings.qa.queue},
        },
        "worker_hijack_root_logger": True,
    }


def create_app(settings: Settings) -> Celery:
    celery = Celery("f5batch", set_as_current=True)
    celery.config_from_object(celery_config(settings))
    # Celery's command line copies RESULT_BACKEND (its ``--result-backend`` option's variable) to
    # CELERY_RESULT_BACKEND, and that variable outranks the configured ``result_backend``: a worker started the
    # documented way got Celery's plain Redis backend, which loses a finished job's result when Redis refuses the
    # write for memory. The backend class is pinned here (Celery's ``backend_cls`` outranks both), with the URL that
    # command line chose.
    celery.backend_cls = result_backend_url(os.environ.get("CELERY_RESULT_BACKEND")
                                            or settings.broker.resolved_result_backend)
    return celery


settings = load_settings()
app = create_app(settings)

"""The workers' Redis result backend (``worker.broker.results``) against a real redis-server: a state is stored and
published in one round trip, a late state never replaces SUCCESS, and a STARTED state is written only for a job still
running a moment after it started."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from tests.services import RedisServer, wait_until
from worker.broker.results import STARTED_AFTER_S


@pytest.fixture
def backend(tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    app = Celery("results-test", set_as_current=False)
    app.conf.update(result_serializer="json", accept_content=["json"], result_accept_content=["json"],
                    result_expires=600)
    app.backend_cls = f"worker.broker.results:RedisBackend+{redis.url}"
    yield app, redis
    redis.stop()


def test_a_stored_state_reaches_a_waiting_client_and_expires(backend):
    app, redis = backend
    waiting = app.AsyncResult("job-1")
    waiting.backend.on_task_call(None, "job-1")  # the client subscribes as it does when it sends a task
    app.backend.store_result("job-1", {"key": "a/b.wav"}, "SUCCESS")
    assert waiting.get(timeout=10) == {"key": "a/b.wav"}
    assert 0 < redis.client().ttl("celery-task-meta-job-1") <= 600


def test_a_late_state_never_replaces_success(backend):
    """A lost worker's or a duplicate's later state (a retry, a failure) is dropped once the task succeeded."""
    app, _ = backend
    app.backend.store_result("job-2", {"key": "a/b.wav"}, "SUCCESS")
    app.backend.store_result("job-2", None, "RETRY")
    app.backend.mark_as_failure("job-2", RuntimeError("late"))
    assert app.AsyncResult("job-2").state == "SUCCESS"
    app.backend.store_result("job-3", None, "RETRY")  # anything else is replaced as usual
    app.backend.store_result("job-3", {"key": "c.wav"}, "SUCCESS")
    assert app.AsyncResult("job-3").result == {"key": "c.wav"}


def test_started_is_written_only_for_a_job_still_running_a_moment_later(backend):
    app, _ = backend
    app.backend.store_result("quick", {"pid": 1}, "STARTED")
    app.backend.store_result("quick", {"key": "q.wav"}, "SUCCESS")  # done at once: no STARTED to write
    app.backend.store_result("slow", {"pid": 1}, "STARTED")
    wait_until(lambda: app.AsyncResult("slow").state == "STARTED", 10, "the slow job's STARTED state")
    time.sleep(5 * STARTED_AFTER_S)  # a STARTED write of the quick job would have landed by now
    assert app.AsyncResult("quick").state == "SUCCESS"
    app.backend.store_result("slow", {"key": "s.wav"}, "SUCCESS")
    assert app.AsyncResult("slow").state == "SUCCESS"


def test_a_redis_that_refuses_scripts_still_stores_states(tmp_path, monkeypatch, caplog):
    """Scripting disabled (as on some managed Redis): the states are stored with a read and a write, as Celery does."""
    import logging

    from worker.broker import results

    monkeypatch.setattr(results._Patient, "_scripts_refused_until", 0.0)
    redis = RedisServer(tmp_path / "noscripts")
    redis.start_args = ["--rename-command", "EVALSHA", "", "--rename-command", "EVAL", ""]
    redis.start()
    try:
        app = Celery("results-noscripts", set_as_current=False)
        app.conf.update(result_serializer="json", accept_content=["json"], result_accept_content=["json"])
        app.backend_cls = f"worker.broker.results:RedisBackend+{redis.url}"
        caplog.set_level(logging.WARNING, logger="worker.broker.results")
        app.backend.store_result("job-4", {"key": "d.wav"}, "SUCCESS")
        app.backend.store_result("job-4", None, "RETRY")
        assert app.AsyncResult("job-4").result == {"key": "d.wav"}
        assert "refused the result script" in caplog.text
    finally:
        redis.stop()


def test_a_late_started_replaces_only_a_waiting_state(backend):
    """A retried job's next run shows as started again; a job that failed meanwhile stays failed."""
    app, _ = backend
    app.backend.store_result("retried", None, "RETRY")
    app.backend.store_result("retried", {"pid": 1}, "STARTED")
    wait_until(lambda: app.AsyncResult("retried").state == "STARTED", 10, "the retried job's STARTED state")
    app.backend._store_result("failed", None, "FAILURE")  # stored meanwhile, from elsewhere
    app.backend._write_started("failed", {"pid": 1}, (), {})  # a STARTED that was already on its way
    assert app.AsyncResult("failed").state == "FAILURE"

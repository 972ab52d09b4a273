"""A finished task's message is acknowledged only once what it stored is durable (``worker.broker.request``): Celery's
own request class, generated around ours as a worker does, a real task message through a real redis-server, and a
task whose ``settle_before_ack`` says whether its audio could be flushed."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.concurrency.thread import TaskPool
from celery.worker.request import create_request_cls

from tests.services import RedisServer, queued
from worker.broker.request import ValidatedRequest

FLUSHED: list[bool] = []  # what each call to settle_before_ack answers, in order
ASKED: list[bool] = []


class Flushing(Task):  # type: ignore[type-arg]
    Request = "worker.broker.request:ValidatedRequest"
    acks_late = True

    def settle_before_ack(self) -> bool:
        ASKED.append(FLUSHED[len(ASKED)])
        return ASKED[-1]


def test_a_message_is_acknowledged_after_its_audio_is_flushed_and_requeued_if_it_cannot_be(tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        app = Celery("ack-after-flush", broker=redis.url, set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"])

        @app.task(bind=True, base=Flushing, name="test.flushing")
        def flushing(self: Task) -> int:  # type: ignore[type-arg]
            return 1

        def handled(flushed: bool) -> Any:
            FLUSHED.append(flushed)
            flushing.apply_async(queue="acks")
            with app.connection_for_read() as conn:
                queue = conn.SimpleQueue("acks", no_ack=False)
                message = queue.get(timeout=10)
                request_cls = create_request_cls(ValidatedRequest, flushing, TaskPool(limit=1), "w@test", None, app=app)
                request = request_cls(message, app=app, task=flushing, hostname="w@test", connection_errors=(),
                                      on_ack=lambda *_: message.ack(),
                                      on_reject=lambda _log, _errors, requeue: message.reject(requeue=requeue))
                request.on_success((False, 1, 0.01))  # what the pool calls when the task returned
                queue.close()
            return message

        message = handled(flushed=True)
        assert ASKED == [True] and message.acknowledged and queued(redis.client(), "acks") == 0
        message = handled(flushed=False)  # the flush failed: back in the queue, the job runs again
        assert ASKED == [True, False] and queued(redis.client(), "acks") == 1
    finally:
        redis.stop()

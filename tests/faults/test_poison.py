"""Poison messages: not JSON, a wrong protocol, a missing field, an unknown task. Each is rejected and logged, the
worker stays up, and the next good job succeeds."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.conftest import job, plain_celery
from tests.services import wait_until

pytestmark = pytest.mark.timeout(300)


def _envelope(body: bytes, headers: dict, content_type: str = "application/json") -> str:
    """A message as kombu's Redis transport stores it in the queue list."""
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": content_type,
        "headers": headers,
        "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()), "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": "f5tts"}, "priority": 0},
    })


def _v2_headers(task: str, task_id: str) -> dict:
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}


POISON = {
    "not-json-envelope": "this is not a kombu envelope at all {",
    "not-json-body": _envelope(b"\x80\x04 not json", _v2_headers("f5tts.synthesize", "poison-body")),
    "wrong-protocol": _envelope(json.dumps(["just", "a", "list"]).encode(), {}),
    "missing-field": _envelope(json.dumps([[], {}]).encode(), {"lang": "py", "task": "f5tts.synthesize"}),
    "missing-kwargs": _envelope(json.dumps([[], {}, {}]).encode(), _v2_headers("f5tts.synthesize", "poison-empty")),
    "unknown-task": _envelope(json.dumps([[], {"job": {}}, {}]).encode(), _v2_headers("f5tts.nope", "poison-task")),
}


def test_poison_messages_are_rejected_and_the_worker_keeps_serving(s3_worker, redis_server):
    pool_before = sorted(p.pid for p in s3_worker.children())
    offset = len(s3_worker.log())
    client = redis_server.client()
    for payload in POISON.values():
        client.lpush("f5tts", payload)
    wait_until(lambda: client.llen("f5tts") == 0, 60, "the worker to take every poison message")
    good = plain_celery(redis_server.url).send_task("f5tts.synthesize", kwargs={"job": job("Después del veneno.",
                                                    "poison/after.wav")}, queue="f5tts")
    assert good.get(timeout=120)["key"] == "poison/after.wav"
    # two pool processes: a poison message's failure may be logged just after the good job's success
    wait_until(lambda: "invalid_job" in s3_worker.log()[offset:], 30, "the bad-input failure to be logged")
    log = s3_worker.log()[offset:]
    assert "Received unregistered task of type 'f5tts.nope'" in log
    assert "poison-empty" in log and "invalid_job" in log  # a task message without the job fails as bad input
    assert log.count("Traceback") <= len(POISON) + 2
    assert s3_worker.process.poll() is None
    assert sorted(p.pid for p in s3_worker.children()) == pool_before
    assert plain_celery(redis_server.url).AsyncResult("poison-empty").state == "FAILURE"

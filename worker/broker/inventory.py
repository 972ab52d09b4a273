"""What the broker holds for a queue: every message waiting in it, and every message a worker holds unacknowledged.

``resume`` and a re-run ``enqueue`` must send a segment again only when nothing in the broker can still produce its
audio. Celery's result states cannot say so (a queued job and a job whose message is lost both read ``PENDING``), so
this reads Redis itself: the queue's priority lists, and kombu's ``unacked`` hash, where a worker's reserved, running
and retrying (ETA) messages are recorded. A message is in exactly one of the two (``worker.broker.fetch``).

For each message: its task id and the output keys of its jobs (from the task's JSON body). A held message counts only
while its worker is alive: live workers renew the score of what they hold (``worker.broker.visibility``), so one whose
score is older than three renewals was held by a worker that died, and its segment is missing, not on its way (the
visibility-timeout sweep would bring the message back only an hour later). Reading costs one ``LRANGE`` page per
thousand waiting messages and one ``HSCAN`` page per thousand held ones; with backpressure the queue holds at most
``--max-queued`` of them.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PAGE = 1000


@dataclass
class Inventory:
    """Task ids and output keys of the messages that can still run."""

    task_ids: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    tasks_by_key: dict[str, str] = field(default_factory=dict)  # output key -> the task id of a message carrying it
    messages: int = 0
    stale_keys: set[str] = field(default_factory=set)  # held by a worker that stopped renewing: a dead one

    def add(self, envelope: dict[str, Any]) -> None:
        headers = envelope.get("headers") or {}
        task_id = headers.get("id")
        keys = output_keys(envelope)
        if isinstance(task_id, str):
            self.task_ids.add(task_id)
            self.tasks_by_key.update(dict.fromkeys(keys, task_id))
        self.keys.update(keys)
        self.messages += 1


def output_keys(envelope: dict[str, Any]) -> list[str]:
    """The ``output.key`` of each job a task message carries (``job`` or ``jobs``), when its body can be read."""
    try:
        body = envelope.get("body")
        if envelope.get("properties", {}).get("body_encoding") == "base64" and isinstance(body, str):
            body = base64.b64decode(body)
        decoded = json.loads(body) if isinstance(body, (bytes, str)) else body
        kwargs = decoded[1] if isinstance(decoded, list) and len(decoded) > 1 else {}
    except (ValueError, TypeError):
        return []
    if not isinstance(kwargs, dict):  # not a Celery task message's [args, kwargs, embed]
        return []
    jobs = kwargs.get("jobs")
    if not isinstance(jobs, list):
        jobs = [kwargs.get("job")]
    keys = []
    for job in jobs:
        output = job.get("output") if isinstance(job, dict) else None
        if isinstance(output, dict) and isinstance(output.get("key"), str):
            keys.append(output["key"])
    return keys


def _envelopes_waiting(client: Any, names: list[str]) -> Iterator[dict[str, Any]]:
    for name in names:
        start = 0
        while True:
            items = client.lrange(name, start, start + PAGE - 1)
            for item in items:
                yield from _decoded(item)
            if len(items) < PAGE:
                break
            start += PAGE


def _envelopes_held(client: Any, unacked_key: str, index_key: str, queue: str,
                    stale_before: float) -> Iterator[tuple[dict[str, Any], bool]]:
    """(envelope, held by a live worker) for each message held unacknowledged for ``queue``."""
    scores = {tag.decode() if isinstance(tag, bytes) else tag: score
              for tag, score in client.zrange(index_key, 0, -1, withscores=True)}
    cursor = 0
    while True:
        cursor, found = client.hscan(unacked_key, cursor, count=PAGE)
        for tag, value in found.items():
            try:
                payload, _exchange, routing_key = json.loads(value)
            except (ValueError, TypeError):
                continue
            if routing_key in (queue, None, "") and isinstance(payload, dict):
                name = tag.decode() if isinstance(tag, bytes) else tag
                yield payload, scores.get(name, 0.0) >= stale_before
        if not cursor:
            break


def _decoded(item: bytes | str) -> Iterator[dict[str, Any]]:
    try:
        envelope = json.loads(item)
    except (ValueError, TypeError):
        return
    if isinstance(envelope, dict):
        yield envelope


def broker_inventory(app: Any, queue: str) -> Inventory:
    """Everything the broker holds for ``queue``, through the app's own broker connection (Sentinel included)."""
    from worker.broker.visibility import STALE_RENEWALS, renewal_interval

    inventory = Inventory()
    stale_before = time.time() - STALE_RENEWALS * renewal_interval(app.conf.broker_transport_options or {})
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        names = [channel._q_for_pri(queue, step) for step in channel.priority_steps]  # kombu's own naming
        for envelope in _envelopes_waiting(client, names):
            inventory.add(envelope)
        for envelope, alive in _envelopes_held(client, channel.unacked_key, channel.unacked_index_key, queue,
                                               stale_before):
            if alive:
                inventory.add(envelope)
            else:
                inventory.stale_keys.update(output_keys(envelope))
    return inventory

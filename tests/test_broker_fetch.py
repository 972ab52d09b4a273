"""The worker's atomic fetch (``worker.broker.fetch``) against a real redis-server, through kombu's public API: the
order it serves, what it records, that a recorded message comes back whole, and what it does where it cannot run.
The fault tests (a worker killed, or the network cut, between hand-out and record) are in
tests/faults/test_redis_restart.py."""

from __future__ import annotations

import contextlib
import json
import logging
import time

import pytest
from kombu import Connection, Producer, Queue

from tests.services import RedisServer, queued

TRANSPORT = "worker.broker.transport:Transport"
OPTIONS = {"queue_order_strategy": "priority", "priority_steps": list(range(10)), "sep": ":",
           "visibility_timeout": 600, "idle_poll_interval": 0.02}


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def publish(url: str, queue: Queue, bodies: list[tuple[dict, int]]) -> None:
    with Connection(url, transport_options=OPTIONS) as conn:  # kombu's stock transport, as producers and clients use
        producer = Producer(conn.channel())
        for body, priority in bodies:
            producer.publish(body, routing_key=queue.name, declare=[queue], priority=priority, serializer="json",
                             headers={"stamped_headers": [], "nested": {"empty": []}})


def consume(url: str, queue: Queue, count: int, no_ack: bool = False, timeout: float = 10) -> tuple[Connection, list]:
    conn = Connection(url, transport=TRANSPORT, transport_options=OPTIONS)
    got: list = []
    consumer = conn.Consumer(queue, callbacks=[lambda body, message: got.append((body, message))], no_ack=no_ack,
                             accept=["json"])
    consumer.qos(prefetch_count=count)
    consumer.consume()
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.5)
    return conn, got


def test_serves_by_priority_and_records_each_message_as_it_hands_it_out(redis):
    queue = Queue("jobs")
    publish(redis.url, queue, [({"n": n}, priority) for n, priority in enumerate([6, 6, 0, 9, 3])])
    conn, got = consume(redis.url, queue, 5)
    try:
        assert [body["n"] for body, _ in got] == [2, 4, 0, 1, 3]  # 0 first; equal priorities in publishing order
        client = redis.client()
        assert queued(client, "jobs") == 0
        for _body, message in got:  # recorded in kombu's own format before anyone acknowledged anything
            payload, _exchange, routing_key = json.loads(client.hget("unacked", message.delivery_tag))
            assert payload["properties"]["delivery_tag"] == message.delivery_tag and routing_key == "jobs"
            assert client.zscore("unacked_index", message.delivery_tag) is not None
        for _, message in got:
            message.ack()
        assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
    finally:
        conn.release()


def test_a_recorded_message_comes_back_whole(redis):
    """Unacknowledged messages go back to the queue (here when the consumer closes; after a crash, by the visibility
    sweep) from the record the script wrote: the same body and headers, empty lists included, marked redelivered."""
    queue = Queue("jobs")
    publish(redis.url, queue, [({"args": [], "kwargs": {"text": "Llegó, pues, el día.", "tags": []}}, 0)])
    conn, got = consume(redis.url, queue, 1)
    first = got[0][1]
    conn.release()  # not acknowledged
    assert queued(redis.client(), "jobs") == 1 and redis.client().hlen("unacked") == 0
    conn, again = consume(redis.url, queue, 1)
    try:
        body, message = again[0]
        assert body == {"args": [], "kwargs": {"text": "Llegó, pues, el día.", "tags": []}}
        assert message.headers["stamped_headers"] == [] and message.headers["nested"] == {"empty": []}
        assert message.delivery_tag == first.delivery_tag and message.delivery_info["redelivered"]
        message.ack()
    finally:
        conn.release()


def test_reply_queues_consumed_without_acks_are_not_recorded(redis):
    """Celery's reply queues are consumed without acknowledgements; a record of theirs would be delivered again by
    the visibility sweep."""
    queue = Queue("replies")
    publish(redis.url, queue, [({"reply": n}, 0) for n in range(3)])
    conn, got = consume(redis.url, queue, 3, no_ack=True)
    try:
        assert sorted(body["reply"] for body, _ in got) == [0, 1, 2]
        assert redis.client().hlen("unacked") == 0
    finally:
        conn.release()


def test_a_redis_that_refuses_scripts_still_serves_with_a_warning(tmp_path, caplog):
    server = RedisServer(tmp_path / "noeval")
    server.start_args = ["--rename-command", "EVAL", ""]  # as on a managed Redis with scripting disabled
    server.start()
    try:
        queue = Queue("jobs")
        publish(server.url, queue, [({"n": n}, 0) for n in range(3)])
        with caplog.at_level(logging.WARNING, logger="worker.broker.fetch"):
            conn, got = consume(server.url, queue, 3)
        try:
            assert sorted(body["n"] for body, _ in got) == [0, 1, 2]
            assert "Redis refused the atomic fetch" in caplog.text
            for _, message in got:
                message.ack()
            assert server.client().hlen("unacked") == 0
        finally:
            conn.release()
    finally:
        server.stop()


def test_renewing_held_messages_while_a_fetch_is_in_flight_leaves_the_fetch_its_reply(redis):
    """The renewal timer runs in the consumer's event loop, between a fetch sent and its reply read. It used to send
    its ZADD on the consumer's own connection: the ZADD read the fetch's reply, the fetch read the ZADD's (an int), and
    the worker stopped ("cannot unpack non-iterable int object"), seen in the soak. It must use a connection of its
    own."""
    from worker.broker.visibility import renew

    queue = Queue("jobs")
    publish(redis.url, queue, [({"n": n}, 0) for n in range(2)])
    conn, got = consume(redis.url, queue, 1)
    try:
        channel = conn.default_channel
        channel.qos.prefetch_count = 2  # room for the second message
        before = redis.client().zscore("unacked_index", got[0][1].delivery_tag)
        time.sleep(0.01)
        channel._brpop_start()  # the next fetch, sent; its reply not read yet
        assert renew(channel) == 1  # the message held, renewed
        assert redis.client().zscore("unacked_index", got[0][1].delivery_tag) > before
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:  # the fetch in flight reads its own reply
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
        assert sorted(body["n"] for body, _ in got) == [0, 1]
    finally:
        conn.release()


def test_a_full_redis_still_hands_messages_out_atomically(redis, caplog):
    """At ``maxmemory`` under ``noeviction`` Redis still runs the fetch script (moving a message frees about as much as
    its record takes): the message is handed out and recorded, and the channel does not fall back to BRPOP, although
    redis-py's words for a full Redis ("command not allowed when used memory > 'maxmemory'") are also a server's
    without scripting."""
    queue = Queue("jobs")
    publish(redis.url, queue, [({"n": 1}, 0)])
    client = redis.client()
    conn = Connection(redis.url, transport=TRANSPORT, transport_options=OPTIONS)
    got: list = []
    consumer = conn.Consumer(queue, callbacks=[lambda body, message: got.append((body, message))], accept=["json"])
    consumer.qos(prefetch_count=1)
    for index in range(16):  # full before the consumer asks for anything
        client.set(f"filler:{index}", b"x" * 65536)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 512 * 1024)
    caplog.set_level(logging.WARNING, logger="worker.broker.fetch")
    try:
        consumer.consume()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
        assert [body for body, _ in got] == [{"n": 1}]
        assert client.hlen("unacked") == 1 and queued(client, "jobs") == 0
        assert "refused the atomic fetch" not in caplog.text
        client.delete(*[f"filler:{index}" for index in range(16)])  # an acknowledgement is a transaction: refused
        client.config_set("maxmemory", 0)
        got[0][1].ack()
    finally:
        conn.release()


def test_the_fetch_says_how_many_messages_its_queues_still_hold(redis):
    """A channel that took the last message waits for a wake-up (or its poll) next, instead of asking again at once:
    the script's reply counts what is left in the lists it was given."""
    from worker.broker.fetch import FETCH_SCRIPT

    client = redis.client()
    client.lpush("q:9", json.dumps({"properties": {"delivery_tag": "late", "delivery_info": {"exchange": "",
                                                                                           "routing_key": "q"}}}))
    for tag in ("a", "b"):
        client.lpush("q", json.dumps({"properties": {"delivery_tag": tag, "delivery_info": {"exchange": "",
                                                                                            "routing_key": "q"}}}))
    fetch = client.register_script(FETCH_SCRIPT)
    keys = ["unacked", "unacked_index", "claim", "claim", "q", "q:9"]
    replies = [fetch(keys=keys, args=[time.time(), 60]) for _ in range(4)]
    assert [(json.loads(item)["properties"]["delivery_tag"], recorded, left)
            for _, item, recorded, left in replies[:3]] == [("a", 1, 2), ("b", 1, 1), ("late", 1, 0)]
    assert replies[3] is None  # every list empty
    assert client.hlen("unacked") == 3


def test_a_ticking_channel_that_took_the_last_message_waits_for_a_wake_up_unless_one_came_meanwhile(redis):
    """In a worker's event loop (stood in for here: ``ticks_idle_channels``, and the loop's tick or a wake-up called by
    hand), a channel that took the last message asks nothing more until its next tick or wake-up; a wake-up that came
    while that fetch was out makes it ask again at once (the message behind that wake-up may be newer than the
    script's count)."""
    queue = Queue("jobs")
    publish(redis.url, queue, [({"n": 1}, 0)])
    conn = Connection(redis.url, transport=TRANSPORT, transport_options=OPTIONS)
    got: list = []
    consumer = conn.Consumer(queue, callbacks=[lambda body, message: got.append(body["n"])], accept=["json"])
    consumer.qos(prefetch_count=10)
    transport = conn.transport
    transport.ticks_idle_channels = True

    def drain(until: int, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while len(got) < until and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)

    try:
        consumer.consume()
        drain(1)
        assert got == [1]
        publish(redis.url, queue, [({"n": 2}, 0)])  # kombu's stock publish: no wake-up
        drain(2, timeout=0.6)
        assert got == [1] and queued(redis.client(), "jobs") == 1  # not asked for: waiting for the tick
        transport._end_idle_waits()  # the loop's tick
        drain(2)
        assert got == [1, 2]
        publish(redis.url, queue, [({"n": 3}, 0)])
        transport._end_idle_waits()
        consumer.channel._brpop_start()  # the fetch of 3, the last message, is out (and has run)
        time.sleep(0.1)
        publish(redis.url, queue, [({"n": 4}, 0)])
        transport.wakes += 1  # 4's wake-up arrives before the fetch's reply
        drain(4, timeout=1.5)
        assert got == [1, 2, 3, 4]  # asked again at once after 3: 4 came without a tick
    finally:
        conn.release()

"""Worker start-up: the import rule, the Celery settings that guarantee delivery, and refusing to start broken."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, worker_env
from tests.services import WorkerProcess


def test_import_worker_and_producer_do_not_import_torch():
    code = ("import sys, worker, worker.tasks, worker.signals, producer.cli; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'f5_tts', 'torchaudio', 'vocos'));"
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_schema_file_is_in_sync_with_the_contract():
    from worker.contract import schema_text

    assert (REPO / "schema" / "job.schema.json").read_text() == schema_text(), \
        "run: python -m worker.contract > schema/job.schema.json"


def test_celery_settings_that_delivery_depends_on():
    from worker.celery_app import app, settings

    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.result_accept_content == ["json"] and conf.event_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert visibility > conf.task_time_limit > conf.task_soft_time_limit
    assert conf.result_backend_transport_options["visibility_timeout"] == visibility
    assert conf.worker_proc_alive_timeout >= 60
    assert conf.worker_send_task_events and conf.task_send_sent_event and conf.task_track_started
    assert conf.worker_consumer == "worker.broker.consumer:Consumer"  # task events off a job's way
    assert conf.broker_connection_retry_on_startup and conf.result_expires == settings.broker.result_expires


def test_visibility_timeout_must_exceed_the_time_limit(monkeypatch):
    from worker.celery_app import celery_config
    from worker.settings import Settings

    monkeypatch.setenv("VISIBILITY_TIMEOUT", "100")
    monkeypatch.setenv("TASK_TIME_LIMIT", "200")
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT"):
        celery_config(Settings())


def test_pickle_is_refused(s3_worker, redis_server):
    from kombu import Connection

    from tests.conftest import job, plain_celery
    from tests.services import wait_until

    with Connection(redis_server.url) as connection:
        connection.Producer().publish({"job": {}}, routing_key="f5tts", serializer="pickle",
                                      headers={"task": "f5tts.synthesize", "id": "pickled-1"})
    wait_until(lambda: "untrusted content of type pickle" in s3_worker.log(), 30, "the worker to refuse pickle")
    assert not any("pickled-1" in line and "succeeded" in line for line in s3_worker.log().splitlines())
    client = plain_celery(redis_server.url)
    after = client.send_task("f5tts.synthesize", kwargs={"job": job("Después del pickle.", "pickle/after.wav")},
                             queue="f5tts")
    assert after.get(timeout=120)["key"] == "pickle/after.wav"


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"F5_MODEL": "F5TTS_v9"}, "unknown model 'F5TTS_v9'"),
    ({"F5_CKPT_FILE": "/nonexistent/model.safetensors"}, "F5_CKPT_FILE=/nonexistent/model.safetensors"),
])
def test_worker_refuses_to_start_with_a_broken_engine_config(redis_server, prepared_random_weights, service_dir,
                                                             tmp_path, overrides, needle):
    env = worker_env(redis_server.url, f"file://{tmp_path}", prepared_random_weights, **overrides)
    worker = WorkerProcess(env, service_dir / "logs").start(wait=False)
    code = worker.process.wait(timeout=120)
    assert code != 0 and needle in worker.log()


@pytest.mark.parametrize("pool", [[], ["--pool", "processes", "-c", "2"]], ids=["threads", "prefork"])
def test_worker_stops_when_a_pool_process_cannot_build_its_engine(redis_server, prepared_random_weights, service_dir,
                                                                  tmp_path, pool):
    """The engine fails to build in the worker (threads) or in a pool child (prefork: Celery only logs what a child's
    start-up signal raises, and the child would take jobs it cannot run)."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"this is not a checkpoint")
    env = worker_env(redis_server.url, f"file://{tmp_path}", prepared_random_weights, F5_CKPT_FILE=str(broken))
    worker = WorkerProcess(env, service_dir / "logs", extra_args=pool).start(wait=False)
    code = worker.process.wait(timeout=120)
    log = worker.log()
    assert code != 0
    assert "could not build the engine" in log and str(broken) in log
    assert "Task f5tts" not in log


def test_prefork_children_serve_with_an_engine_each(redis_server, prepared_random_weights, service_dir, tmp_path,
                                                    ref_wav_bytes):
    """``--pool processes`` (prefork): each daemonic pool child starts an engine process of its own (through billiard,
    which multiprocessing refuses from a daemonic process) and serves jobs one at a time."""
    from tests.conftest import VOICE_KEY, job, plain_celery

    (tmp_path / VOICE_KEY).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / VOICE_KEY).write_bytes(ref_wav_bytes)
    env = worker_env(redis_server.url, f"file://{tmp_path}", prepared_random_weights, F5_QUEUE="prefork-serving")
    worker = WorkerProcess(env, service_dir / "logs", concurrency=2, extra_args=["--pool", "processes"]).start()
    try:
        client = plain_celery(redis_server.url)
        sent = [client.send_task("f5tts.synthesize", kwargs={"job": job(f"Prefork job {i}.", f"prefork/{i}.wav",
                                                                         nfe_step=4)}, queue="prefork-serving")
                for i in range(4)]
        results = [result.get(timeout=180) for result in sent]
        log, engines = worker.log(), worker.children()
    finally:
        worker.stop()
    assert sorted(r["key"] for r in results) == [f"prefork/{i}.wav" for i in range(4)]
    assert all((tmp_path / r["key"]).stat().st_size == r["bytes"] for r in results)
    children = {line.rsplit("pool child ", 1)[1].split(";")[0] for line in log.splitlines()
                if "engine ready in 1 engine process(es) for pool child" in line}
    assert len(children) == 2
    assert len(engines) == 2  # one engine process under each child; the worker started none of its own
    assert "names Celery's default pool" not in log


def test_pool_prefork_by_name_is_the_configured_pool_and_says_so(redis_server, prepared_random_weights, service_dir,
                                                                 tmp_path):
    """Celery cannot tell ``--pool prefork`` from no pool given (it takes the app's ``threads``): the worker says so
    and names the flag that gives prefork."""
    env = worker_env(redis_server.url, f"file://{tmp_path}", prepared_random_weights, F5_QUEUE="prefork-by-name")
    worker = WorkerProcess(env, service_dir / "logs", extra_args=["--pool", "prefork"]).start()
    try:
        log = worker.log()
    finally:
        worker.stop()
    assert "this worker runs the threads pool" in log and "give --pool processes" in log
    assert "for pool child" not in log


def test_an_engine_whose_worker_dies_while_it_builds_exits_at_once(redis_server, prepared_random_weights,
                                                                    service_dir, tmp_path):
    """SIGKILL leaves the worker no time to stop its engine process, which is still importing torch and building the
    model: nothing reads its line then, and it would build on for nobody (minutes and a GPU's memory, on a GPU). It
    sees its line hang up and exits before it has built."""
    import psutil

    from tests.services import wait_until

    env = worker_env(redis_server.url, f"file://{tmp_path}", prepared_random_weights, F5_QUEUE="orphaned-engine")
    worker = WorkerProcess(env, service_dir / "logs").launch()
    try:
        wait_until(lambda: len(worker.children()) == 1, 60, "the engine process to start", interval=0.02)
        engine = worker.children()[0]
        worker.send_signal(signal.SIGKILL)
        worker.process.wait(30)

        def gone() -> bool:
            try:
                return engine.status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped by its new parent
            except psutil.NoSuchProcess:
                return True

        wait_until(gone, 60, "the orphaned engine to exit")
        assert "warm-up:" not in worker.log()  # it never finished building (a tiny model's build takes seconds)
    finally:
        with contextlib.suppress(Exception):
            worker.stop()
            for child in psutil.Process(worker.process.pid).children(recursive=True):
                child.kill()


def test_results_are_json(s3_worker, redis_server):
    from tests.conftest import job, plain_celery

    client = plain_celery(redis_server.url)
    result = client.send_task("f5tts.synthesize", kwargs={"job": job("Todo en JSON.", "json/x.wav")}, queue="f5tts")
    result.get(timeout=120)
    raw = redis_server.client().get(f"celery-task-meta-{result.id}")
    stored = json.loads(raw)
    assert stored["status"] == "SUCCESS" and stored["result"]["key"] == "json/x.wav"

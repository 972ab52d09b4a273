"""Jobs from other languages and tools against a real worker: Node.js (celery-node, protocol 2 and protocol 1) and
Flower's HTTP API; and what Flower and the worker's Prometheus endpoint report about them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests

from tests.conftest import BUCKET, PREFIX, REF_TEXT, REPO, VOICE_KEY, worker_env
from tests.services import free_port, wait_until

pytestmark = pytest.mark.timeout(400)

NODE_CLIENT = REPO / "tests" / "interop" / "node"


def _job(key: str, text: str = "Un trabajo enviado desde otro lenguaje.") -> dict:
    return {"text": text, "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT}, "output": {"key": key},
            "params": {"nfe_step": 4, "seed": 5}}


def _node_modules() -> None:
    if not (NODE_CLIENT / "node_modules" / "celery-node").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, capture_output=True,
                       timeout=300)


@pytest.mark.parametrize("protocol", [2, 1])
def test_node_celery_client_job_is_synthesised_and_uploaded(s3_worker, redis_server, s3_server, protocol):
    assert shutil.which("node"), "Node.js is needed for this interop test"
    _node_modules()
    key = f"interop/node-v{protocol}.wav"
    done = subprocess.run(["node", "submit.js", redis_server.url, redis_server.url, "f5tts", str(protocol),
                           json.dumps(_job(key))], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    head = s3_server.client().head_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
    assert result["key"] == key and head["ContentLength"] == result["bytes"]
    assert head["Metadata"]["f5-sha256"] == result["sha256"]


@pytest.fixture(scope="module")
def flower(s3_worker, redis_server, service_dir):
    port = free_port()
    env = worker_env(redis_server.url, f"s3://{BUCKET}/{PREFIX}", service_dir, FLOWER_UNAUTHENTICATED_API="true")
    log = open(service_dir / "flower.log", "ab")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}",
                                "--address=127.0.0.1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/healthcheck", timeout=2).ok, 60, "flower")
        wait_until(lambda: s3_worker.name in requests.get(f"{base}/api/workers?refresh=1", timeout=30).json(), 60,
                   "flower to see the worker")
        yield base
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def test_flower_http_api_submits_a_job(flower, s3_server):
    answer = requests.post(f"{flower}/api/task/send-task/f5tts.synthesize",
                           json={"kwargs": {"job": _job("interop/flower.wav")}, "queue": "f5tts"}, timeout=30)
    assert answer.ok, answer.text
    task_id = answer.json()["task-id"]
    wait_until(lambda: requests.get(f"{flower}/api/task/result/{task_id}", timeout=10).json().get("state")
               == "SUCCESS", 180, "the job submitted through Flower")
    result = requests.get(f"{flower}/api/task/result/{task_id}", timeout=10).json()["result"]
    head = s3_server.client().head_object(Bucket=BUCKET, Key=f"{PREFIX}/interop/flower.wav")
    assert head["ContentLength"] == result["bytes"]


def test_flower_lists_workers_tasks_queues_and_metrics(flower, s3_worker, redis_server):
    from tests.conftest import job, plain_celery

    result = plain_celery(redis_server.url).send_task("f5tts.synthesize", kwargs={"job": job("Visto en Flower.",
                                                       "interop/seen.wav")}, queue="f5tts")
    result.get(timeout=120)
    # Flower also remembers workers that earlier tests started and stopped on this Redis; ask about ours
    workers = requests.get(f"{flower}/api/workers", timeout=30).json()
    assert "f5tts.synthesize" in workers[s3_worker.name]["registered"]

    def finished() -> dict:
        tasks = requests.get(f"{flower}/api/tasks", params={"taskname": "f5tts.synthesize"}, timeout=10).json()
        return tasks.get(result.id, {})

    wait_until(lambda: finished().get("state") == "SUCCESS", 60, "flower to record the finished task")
    task = finished()
    assert task["name"] == "f5tts.synthesize" and "Visto en Flower." in (task.get("kwargs") or "")
    answer = requests.get(f"{flower}/api/queues/length", timeout=10)
    assert answer.ok, f"{answer.status_code}: {answer.text[:500]}"
    queues = answer.json()
    assert any(q["name"] == "f5tts" for q in queues["active_queues"])
    metrics = requests.get(f"{flower}/metrics", timeout=10).text
    counted = [line for line in metrics.splitlines()
               if line.startswith("flower_events_total") and 'task="f5tts.synthesize"' in line
               and 'type="task-succeeded"' in line]
    assert counted and float(counted[0].split()[-1]) >= 1


def test_worker_metrics_after_real_jobs(redis_server, prepared_random_weights, service_dir, tmp_path, ref_wav_bytes):
    from tests.conftest import plain_celery
    from tests.services import WorkerProcess

    (tmp_path / "voices").mkdir()
    (tmp_path / VOICE_KEY).write_bytes(ref_wav_bytes)
    port = free_port()
    env = worker_env(redis_server.url, f"file://{tmp_path}", prepared_random_weights, F5_QUEUE="metrics",
                     F5_METRICS_PORT=str(port))
    worker = WorkerProcess(env, service_dir / "logs", concurrency=1, extra_args=["-Q", "metrics"]).start()
    try:
        client = plain_celery(redis_server.url)
        for index in range(3):
            client.send_task("f5tts.synthesize", kwargs={"job": _job(f"m/{index}.wav", f"Frase {index}.")},
                             queue="metrics", headers={"f5_enqueued_at": 0}).get(timeout=120)
        with pytest.raises(Exception, match="nfe_step"):
            client.send_task("f5tts.synthesize", kwargs={"job": {**_job("m/bad.wav"), "params": {"nfe_step": 0}}},
                             queue="metrics").get(timeout=120)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        worker.stop()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['f5_jobs_total{outcome="ok"}'] == 3 and values['f5_jobs_total{outcome="bad_input"}'] == 1
    assert values["f5_audio_seconds_total"] > 0 and values["f5_inference_seconds_total"] > 0
    assert values["f5_job_rtf_count"] == 3 and values["f5_pass_rows_count"] == 3
    assert values["f5_queue_wait_seconds_count"] == 3
    assert values["f5_pass_fill_count"] == 3 and values["f5_engine_busy_seconds_total"] > 0
    assert values["f5_engine_idle_seconds_total"] >= 0 and values['f5_pass_frames_total{kind="real"}'] > 0
    assert 'f5_gpu_memory_bytes{kind="allocated"}' not in values  # a CPU engine reports no device memory

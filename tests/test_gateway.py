"""The HTTP gateway against real parts: a real ``f5-batch serve`` (uvicorn), a real worker, Redis and the S3 endpoint.
Requests are plain HTTP from ``requests``, as another backend would send them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests
import soundfile as sf

from tests.conftest import REF_TEXT, REPO, cli, own_queue, two_chapters, worker_env
from tests.services import GatewayProcess, WorkerProcess, queue_keys, wait_until

pytestmark = pytest.mark.timeout(600)

TOKEN = "gateway-test-token"
SEED_BODY = {"gen_text": "Hola, esta es una prueba de rendimiento.", "ref_text": "", "nfe_step": 16, "use_fp16": True}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUCKET = "f5-gateway"  # its own bucket: other tests list theirs and expect only their own prefix there


@pytest.fixture(scope="module")
def stack(redis_server, s3_server, prepared_random_weights, service_dir, ref_wav_path):
    """A worker (few tasks in flight, so that a queued book stays queued) and a gateway on a queue of their own."""
    s3_server.create_bucket(BUCKET)
    env = worker_env(redis_server.url, f"s3://{BUCKET}/gateway", prepared_random_weights, s3_server.endpoint,
                     F5_QUEUE=own_queue("gateway"), F5_GATEWAY_TOKENS=f"another-token,{TOKEN}",
                     F5_DEFAULT_VOICE="narrador", F5_GATEWAY_TTS_TIMEOUT="120")
    assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    worker = WorkerProcess(env, service_dir / "logs", concurrency=4).start()
    gateway = GatewayProcess(env, service_dir / "logs").start()
    yield env, gateway, worker
    gateway.stop()
    worker.stop()


def _s3_bytes(s3_server, key: str) -> bytes:
    return s3_server.client().get_object(Bucket=BUCKET, Key=f"gateway/{key}")["Body"].read()


def test_the_seeds_curl_body_returns_a_playable_wav_in_the_default_voice(stack):
    _, gateway, _ = stack
    answer = requests.post(f"{gateway.url}/tts", json=SEED_BODY, headers=AUTH, timeout=180)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(answer.content))
    assert rate == 24000 and audio.ndim == 1 and len(audio) / rate > 1.0


def test_a_job_posted_to_v1_jobs_completes_and_its_audio_streams_back_byte_identical(stack, s3_server):
    _, gateway, _ = stack
    job = {"job_id": "gw-jobs-1", "text": "Una frase enviada por HTTP.",
           "voice": {"ref_audio": "voices/narrador.wav", "ref_text": REF_TEXT},
           "output": {"key": "api/http/one.wav"}, "params": {"nfe_step": 8, "seed": 3}}
    accepted = requests.post(f"{gateway.url}/v1/jobs", json=job, headers=AUTH, timeout=30)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["job_id"] == "gw-jobs-1" and accepted.headers["location"] == body["status_url"]

    def done() -> bool:
        return requests.get(f"{gateway.url}{body['status_url']}", headers=AUTH, timeout=10).json()["state"] \
            == "succeeded"

    wait_until(done, 180, "the job to succeed", interval=0.2)
    status = requests.get(f"{gateway.url}{body['status_url']}", headers=AUTH, timeout=10).json()
    assert status["result"]["key"] == "api/http/one.wav" and status["error"] is None
    audio = requests.get(f"{gateway.url}{body['audio_url']}", headers=AUTH, timeout=30)
    assert audio.status_code == 200 and audio.content == _s3_bytes(s3_server, "api/http/one.wav")
    assert status["result"]["sha256"] and status["result"]["bytes"] == len(audio.content)


def test_an_interactive_tts_is_served_before_a_queued_book_drains(stack, quijote_path, tmp_path):
    env, gateway, _ = stack
    corpus = two_chapters(quijote_path, tmp_path)
    enqueued = cli(env, "enqueue", str(corpus), "--book", "gwbook", "--voice", "narrador", "--batch-size", "1",
                   "--nfe-step", "32", "--manifest-dir", str(tmp_path / "m"), timeout=300)
    assert enqueued.returncode == 0, enqueued.stderr[-2000:]
    total = len((tmp_path / "m" / "gwbook.jsonl").read_text().splitlines())
    assert total >= 150
    answer = requests.post(f"{gateway.url}/tts", json={**SEED_BODY, "nfe_step": 8}, headers=AUTH, timeout=300)
    assert answer.status_code == 200, answer.text
    counts = requests.get(f"{gateway.url}/v1/books/gwbook", headers=AUTH, timeout=30).json()
    assert counts["total"] == total and counts["done"] < total // 2, counts  # the book is far from drained
    status = json.loads(cli(env, "status", "gwbook", "--json", "--manifest-dir", str(tmp_path / "m")).stdout)
    assert status["total"] == counts["total"] and set(status) - {"failures"} <= set(counts)
    redis.Redis.from_url(env["BROKER_URL"]).delete(*queue_keys(env["F5_QUEUE"]))  # drop the rest of the book


def test_a_request_without_a_valid_token_is_refused(stack):
    _, gateway, _ = stack
    assert requests.post(f"{gateway.url}/tts", json=SEED_BODY, timeout=10).status_code == 401
    wrong = requests.post(f"{gateway.url}/tts", json=SEED_BODY, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    assert requests.get(f"{gateway.url}/v1/jobs/anything", timeout=10).status_code == 401
    assert requests.get(f"{gateway.url}/healthz", timeout=10).status_code == 200  # probes need no token


@pytest.mark.parametrize(("body", "field"), [
    ({**SEED_BODY, "nfe_step": "16"}, "nfe_step"),  # no coercion: a string is not a number
    ({**SEED_BODY, "nfe_step": 500}, "nfe_step"),
    ({**SEED_BODY, "temperature": 0.7}, "temperature"),  # unknown fields are refused, not ignored
    ({**SEED_BODY, "gen_text": "Hola\x00mundo."}, "gen_text"),
])
def test_a_bad_field_is_a_422_naming_it(stack, body, field):
    _, gateway, _ = stack
    answer = requests.post(f"{gateway.url}/tts", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["field"] == field and error["code"] == "invalid_job" and error["message"]


def test_a_10_mb_body_is_refused_before_it_is_parsed(stack):
    _, gateway, _ = stack
    not_json = b"{" * (10 * 1024 * 1024)  # were it parsed, it would be a 422
    answer = requests.post(f"{gateway.url}/v1/jobs", data=not_json, headers={**AUTH, "Content-Type":
                                                                             "application/json"}, timeout=30)
    assert answer.status_code == 413 and answer.json()["code"] == "body_too_large"

    def chunks():  # no Content-Length: refused as the bytes pass the limit
        for _ in range(10):
            yield b" " * (1024 * 1024)

    streamed = requests.post(f"{gateway.url}/v1/jobs", data=chunks(), headers=AUTH, timeout=30)
    assert streamed.status_code == 413


def test_unknown_ids_voices_and_books_are_404_or_400(stack):
    _, gateway, _ = stack
    assert requests.get(f"{gateway.url}/v1/jobs/no-such-job", headers=AUTH, timeout=10).status_code == 404
    assert requests.get(f"{gateway.url}/v1/books/no-such-book", headers=AUTH, timeout=10).status_code == 404
    voice = requests.post(f"{gateway.url}/tts", json={**SEED_BODY, "voice": "nadie"}, headers=AUTH, timeout=30)
    assert voice.status_code == 400 and voice.json()["code"] == "unknown_voice" and voice.json()["field"] == "voice"


def test_readiness_and_the_committed_openapi_document(stack):
    _, gateway, _ = stack
    ready = requests.get(f"{gateway.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["workers"] >= 1
    served = requests.get(f"{gateway.url}/openapi.json", timeout=10).json()
    committed = json.loads((REPO / "schema" / "gateway.openapi.json").read_text())
    assert served == committed, "run: python -m gateway.server > schema/gateway.openapi.json"
    metrics = requests.get(f"{gateway.url}/metrics", headers=AUTH, timeout=10).text
    assert 'f5_gateway_requests_total{method="POST",route="/tts",status="200"}' in metrics


def test_the_gateway_refuses_to_start_without_a_token(redis_server, tmp_path):
    env = worker_env(redis_server.url, f"file://{tmp_path}", tmp_path)
    env.pop("F5_GATEWAY_TOKENS", None)
    done = subprocess.run([str(Path(sys.executable).with_name("f5-batch")), "serve", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "F5_GATEWAY_TOKENS" in done.stderr and "F5_GATEWAY_OPEN" in done.stderr


@pytest.fixture(scope="module")
def edge(redis_server, s3_server, prepared_random_weights, service_dir, ref_wav_path):
    """A gateway in front of a queue no worker serves yet: a fresh deployment with exactly one voice and no
    F5_DEFAULT_VOICE, a short /tts timeout, a tight rate limit, and audio redirects signed for a public endpoint."""
    bucket = s3_server.create_bucket("f5-gateway-edge")
    env = worker_env(redis_server.url, f"s3://{bucket}/edge", prepared_random_weights, s3_server.endpoint,
                     F5_QUEUE=own_queue("edge"), F5_GATEWAY_TOKENS=TOKEN, F5_GATEWAY_TTS_TIMEOUT="3",
                     F5_GATEWAY_RATE="5", F5_GATEWAY_BURST="40", F5_GATEWAY_AUDIO_REDIRECT="true",
                     F5_GATEWAY_PUBLIC_S3_ENDPOINT="http://audio.example.org:9000")
    env.pop("F5_DEFAULT_VOICE", None)
    assert cli(env, "voice", "add", "solista", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    gateway = GatewayProcess(env, service_dir / "logs").start()
    yield env, gateway, bucket
    gateway.stop()


def test_tts_with_no_worker_answers_202_with_a_location_that_leads_to_the_audio(edge, s3_server, service_dir):
    """The seed's own body, on a fresh deployment: no voice named, none configured, one voice in storage."""
    env, gateway, bucket = edge
    answer = requests.post(f"{gateway.url}/tts", json=SEED_BODY, headers=AUTH, timeout=60)
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    assert location == answer.json()["status_url"]
    assert requests.get(f"{gateway.url}{location}", headers=AUTH, timeout=10).json()["state"] == "queued"
    worker = WorkerProcess(env, service_dir / "logs", concurrency=2).start()
    try:
        wait_until(lambda: requests.get(f"{gateway.url}{location}", headers=AUTH, timeout=10).json()["state"]
                   == "succeeded", 180, "the /tts job to finish once a worker started", interval=0.5)
    finally:
        worker.stop()
    status = requests.get(f"{gateway.url}{location}", headers=AUTH, timeout=10).json()
    redirect = requests.get(f"{gateway.url}{status['audio_url']}", headers=AUTH, timeout=10, allow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith("http://audio.example.org:9000/"), "signed for clients, not us"
    key = f"edge/{status['result']['key']}"
    audio = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert sf.info(io.BytesIO(audio)).samplerate == 24000
    s3_server.client().delete_object(Bucket=bucket, Key=key)
    gone = requests.get(f"{gateway.url}{status['audio_url']}", headers=AUTH, timeout=10, allow_redirects=False)
    assert gone.status_code == 404 and gone.json()["code"] == "audio_gone", "no redirect to a missing object"


def test_a_gateway_client_cannot_write_a_books_keys(edge, s3_server):
    _, gateway, _ = edge
    job = {"text": "Sobrescribo un libro.", "voice": {"ref_audio": "voices/solista.wav", "ref_text": REF_TEXT}}
    for key in ("books/quijote/001/00001.wav", "voices/solista.wav", "chapters/001.wav"):
        refused = requests.post(f"{gateway.url}/v1/jobs", json={**job, "output": {"key": key}}, headers=AUTH,
                                timeout=10)
        assert refused.status_code in (400, 422), refused.text  # 422: the contract itself refuses voices/
        assert "bad_key" in refused.text and refused.json()["field"] == "output.key"
    batch = requests.post(f"{gateway.url}/v1/jobs:batch", headers=AUTH, timeout=10, json={"jobs": [
        {**job, "output": {"key": "api/fine.wav"}}, {**job, "output": {"key": "books/q/001/00002.wav"}}]})
    assert batch.status_code == 400, "a batch is refused whole, before any of it is sent"
    accepted = requests.post(f"{gateway.url}/v1/jobs", json={**job, "output": {"key": "api/mine.wav"}},
                             headers=AUTH, timeout=10)
    assert accepted.status_code == 202
    again = requests.post(f"{gateway.url}/v1/jobs", json={**job, "output": {"key": "api/mine.wav"}},
                          headers=AUTH, timeout=10)
    assert again.json()["id"] != accepted.json()["id"], "every send is a run of its own, with its own state"


def test_a_token_over_its_rate_gets_429_with_retry_after(edge):
    _, gateway, _ = edge
    answers = [requests.get(f"{gateway.url}/v1/jobs/none", headers=AUTH, timeout=10) for _ in range(60)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert limited[0].json()["code"] == "rate_limited" and int(limited[0].headers["retry-after"]) >= 1
    assert requests.get(f"{gateway.url}/healthz", timeout=10).status_code == 200  # probes are not limited

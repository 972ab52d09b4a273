"""Credentials come only from the environment and never reach the logs: a password-protected Redis (password in
BROKER_URL) and S3 keys, a good job and a failing one, then the worker's and the CLI's output are searched."""

from __future__ import annotations

import pytest

from tests.conftest import REF_TEXT, VOICE_KEY, cli, worker_env
from tests.services import RedisServer, S3Server, WorkerProcess

pytestmark = pytest.mark.timeout(300)

REDIS_PASSWORD = "s3cr3t-redis-pa55word"


def test_secrets_never_reach_the_logs(prepared_random_weights, service_dir, tmp_path, ref_wav_path):
    redis = RedisServer(tmp_path / "redis")
    redis.start_args = ["--requirepass", REDIS_PASSWORD]
    redis.start()
    s3 = S3Server(tmp_path / "s3").start()
    s3.create_bucket("secret-test")
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}/0"
    env = worker_env(url, "s3://secret-test/p", prepared_random_weights, s3.endpoint, F5_QUEUE="secrets")
    secret_key = env["AWS_SECRET_ACCESS_KEY"]
    worker = WorkerProcess(env, tmp_path / "logs")
    try:
        worker.start()
        added = cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT)
        text = tmp_path / "book.txt"
        text.write_text("Capítulo I.\n\nUna frase.\n\nOtra frase con 3 números.\n", encoding="utf-8")
        done = cli(env, "-vv", "enqueue", str(text), "--book", "secret", "--voice", "narrador", "--nfe-step", "2",
                   "--manifest-dir", str(tmp_path / "m"), "--wait")
        bad = cli(env, "enqueue", str(text), "--book", "secret2", "--ref-audio", "voices/missing.wav", "--ref-text",
                  "x", "--manifest-dir", str(tmp_path / "m"))
        assert added.returncode == 0 and done.returncode == 0 and bad.returncode != 0
        from celery import Celery

        client = Celery(broker=url, backend=url)
        job = {"text": "Falla.", "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT}, "params": {"nfe_step": 0}}
        with pytest.raises(Exception, match="nfe_step"):
            client.send_task("f5tts.synthesize", kwargs={"job": job}, queue="secrets").get(timeout=60)
    finally:
        worker.stop()
        s3.stop()
        redis.stop()
    outputs = worker.log() + added.stdout + added.stderr + done.stdout + done.stderr + bad.stdout + bad.stderr
    assert "Task f5tts.synthesize" in outputs  # the log holds real work...
    assert REDIS_PASSWORD not in outputs and secret_key not in outputs  # ...and no secret

"""Jobs through a real worker: real redis-server, moto's S3 server over HTTP, ``celery -A worker worker`` processes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf

from tests.conftest import BUCKET, PREFIX, REF_TEXT, VOICE_KEY, job, plain_celery
from tests.services import letters_by_job_id

pytestmark = pytest.mark.timeout(300)


def _object(s3_server, key: str):
    answer = s3_server.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
    return answer["Body"].read(), answer["Metadata"]


def test_plain_client_job_by_name_lands_in_s3_with_metadata(s3_worker, redis_server, s3_server):
    script = textwrap.dedent(f"""
        import json, sys
        from celery import Celery
        app = Celery(broker="{redis_server.url}", backend="{redis_server.url}")
        app.conf.update(task_serializer="json", accept_content=["json"])
        job = {{"job_id": "plain-1", "text": "En un lugar de la Mancha.",
               "voice": {{"ref_audio": "{VOICE_KEY}", "ref_text": "{REF_TEXT}"}},
               "output": {{"key": "books/quijote/001/00001.wav"}},
               "params": {{"nfe_step": 8, "seed": 42}}, "metadata": {{"chapter": 1}}}}
        result = app.send_task("f5tts.synthesize", kwargs={{"job": job}}, queue="f5tts")
        output = result.get(timeout=120)
        assert not any(name == "worker" or name.startswith(("worker.", "f5_tts", "torch")) for name in sys.modules)
        print(json.dumps(output))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          cwd="/", env={"PATH": "/usr/bin:/bin"} | {"PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    data, meta = _object(s3_server, "books/quijote/001/00001.wav")
    audio, rate = sf.read(io.BytesIO(data))
    assert rate == 24000 and audio.ndim == 1
    assert result["key"] == "books/quijote/001/00001.wav" and result["bytes"] == len(data)
    assert result["duration_s"] == pytest.approx(len(audio) / 24000, abs=1e-3)
    assert result["seed"] == 42 and result["skipped"] is False and result["metadata"] == {"chapter": 1}
    assert meta["f5-job-id"] == "plain-1" and meta["f5-seed"] == "42" and meta["f5-model"] == "tiny-random"
    import hashlib

    assert meta["f5-sha256"] == result["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["f5-text-sha256"] == hashlib.sha256(b"En un lugar de la Mancha.").hexdigest()
    assert set(result["timings"]) == {"queue_s", "check_s", "prepare_s", "engine_wait_s", "inference_s", "finish_s",
                                      "transfer_s", "encode_s", "upload_s", "batch_wait_s"}  # where the time went
    assert result["timings"]["inference_s"] > 0


def test_batch_returns_a_result_per_item_and_a_bad_item_fails_alone(s3_worker, redis_server, s3_server):
    """A batch with a failed job ends FAILURE (Flower's "Failed" filter shows it), and its error carries every
    job's entry: the good jobs are stored and their results are there."""
    client = plain_celery(redis_server.url)
    jobs = [job("Primera frase del lote.", "batch/a.wav"), job("Segunda frase, algo más larga.", "batch/b.wav"),
            job("Tercera.", "batch/../escape.wav"), job("Cuarta frase del lote.", "batch/d.wav")]
    sent = client.send_task("f5tts.synthesize_batch", kwargs={"jobs": jobs}, queue="f5tts")
    with pytest.raises(Exception, match="1 of 4 jobs failed") as failure:
        sent.get(timeout=120)
    assert sent.state == "FAILURE" and type(failure.value).__name__ == "BatchPartialFailure"
    results = failure.value.args[1]
    assert [r["ok"] for r in results] == [True, True, False, True]
    assert results[2]["error"]["code"] == "bad_key" and results[2]["error"]["field"] == "output.key"
    for entry in (results[0], results[1], results[3]):
        data, meta = _object(s3_server, entry["result"]["key"])
        assert len(data) == entry["result"]["bytes"] and meta["f5-sha256"] == entry["result"]["sha256"]


def test_rerun_is_skipped(s3_worker, redis_server, s3_server):
    client = plain_celery(redis_server.url)
    payload = job("Esta frase se pide dos veces.", "rerun/once.wav")
    first = client.send_task("f5tts.synthesize", kwargs={"job": payload}, queue="f5tts").get(timeout=120)
    before = s3_server.client().head_object(Bucket=BUCKET, Key=f"{PREFIX}/rerun/once.wav")
    second = client.send_task("f5tts.synthesize", kwargs={"job": payload}, queue="f5tts").get(timeout=120)
    after = s3_server.client().head_object(Bucket=BUCKET, Key=f"{PREFIX}/rerun/once.wav")
    assert first["skipped"] is False and second["skipped"] is True
    assert second["sha256"] == first["sha256"] and second["bytes"] == first["bytes"]
    assert after["LastModified"] == before["LastModified"] and after["ETag"] == before["ETag"]
    changed = client.send_task("f5tts.synthesize", kwargs={"job": {**payload, "params": {"seed": 8}}},
                               queue="f5tts").get(timeout=120)
    assert changed["skipped"] is False and changed["sha256"] != first["sha256"]


def test_malformed_job_fails_alone_without_retry_and_the_next_job_works(s3_worker, redis_server):
    client = plain_celery(redis_server.url)
    bad = job("Demasiados pasos.", "bad/nfe.wav", nfe_step=500)
    bad["job_id"] = "bad-nfe"
    result = client.send_task("f5tts.synthesize", kwargs={"job": bad}, queue="f5tts")
    with pytest.raises(Exception) as caught:
        result.get(timeout=120)
    assert "params.nfe_step" in str(caught.value) and "128" in str(caught.value)
    assert result.state == "FAILURE" and result.retries in (0, None)
    letter = letters_by_job_id(redis_server.client())["bad-nfe"]
    assert letter["code"] == "invalid_job" and letter["field"] == "params.nfe_step" and letter["retries"] == 0
    good = client.send_task("f5tts.synthesize", kwargs={"job": job("Esta sí.", "bad/after.wav")}, queue="f5tts")
    assert good.get(timeout=120)["key"] == "bad/after.wav"


@pytest.mark.parametrize("key", ["../outside.wav", "/abs/path.wav", "a/../../b.wav", "%2e%2e/x.wav", "a\\b.wav",
                                 "x" * 2000 + ".wav", "a//b.wav", "ok/\x00.wav"])
def test_keys_that_escape_the_prefix_are_refused(s3_worker, redis_server, s3_server, key):
    client = plain_celery(redis_server.url)
    result = client.send_task("f5tts.synthesize", kwargs={"job": job("Nunca se escribe.", key)}, queue="f5tts")
    with pytest.raises(Exception, match=r"bad_key|output\.key"):
        result.get(timeout=120)
    listed = s3_server.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert all(item["Key"].startswith(f"{PREFIX}/") for item in listed)


def test_wrong_arguments_are_a_clear_error(s3_worker, redis_server):
    client = plain_celery(redis_server.url)
    result = client.send_task("f5tts.synthesize", kwargs={"jobs": [job("x")]}, queue="f5tts")
    with pytest.raises(Exception, match=r"kwargs=\{'job'"):
        result.get(timeout=120)


def test_unknown_voice_is_bad_input(s3_worker, redis_server):
    client = plain_celery(redis_server.url)
    payload = job("¿Quién habla?", "voices-test/missing.wav")
    payload["voice"]["ref_audio"] = "voices/nadie.wav"
    with pytest.raises(Exception, match="unknown_voice"):
        client.send_task("f5tts.synthesize", kwargs={"job": payload}, queue="f5tts").get(timeout=120)

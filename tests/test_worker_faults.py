"""A worker under faults: its engine process SIGKILLed mid-job, the S3 endpoint down for 30 s. Real processes, real
signals; nothing is lost and nothing is duplicated."""

from __future__ import annotations

import io
import re
import signal
import time

import pytest
import soundfile as sf

from tests.conftest import BUCKET, PREFIX, REF_TEXT, VOICE_KEY, job, own_queue, plain_celery, worker_env
from tests.services import S3Server, WorkerProcess, wait_until
from worker.contract import Job

pytestmark = pytest.mark.timeout(400)

LONG_TEXT = ("Llegó, pues, el día, y el hidalgo, armado de todas sus armas, subió sobre su rocín, embrazó su adarga, "
             "tomó su lanza y por la puerta falsa de un corral salió al campo con grandísimo contento. ") * 2


def test_engine_process_killed_mid_job_is_replaced_and_the_job_completed_once(redis_server, s3_server, voice_in_s3,
                                                                              prepared_random_weights, service_dir):
    queue = own_queue("enginekill")
    env = worker_env(redis_server.url, f"s3://{BUCKET}/{PREFIX}", prepared_random_weights, s3_server.endpoint,
                     VISIBILITY_TIMEOUT="60", TASK_TIME_LIMIT="50", TASK_SOFT_TIME_LIMIT="45", F5_QUEUE=queue)
    worker = WorkerProcess(env, service_dir / "logs").start()
    try:
        client = plain_celery(redis_server.url)
        payload = {**job(LONG_TEXT, "kill/once.wav", nfe_step=64), "job_id": "kill-once"}
        result = client.send_task("f5tts.synthesize", kwargs={"job": payload}, queue=queue)
        lost_key = f"f5tts:lost:{Job.model_validate(payload).identity()}"
        # the engine counts a job as lost-if-it-dies when its pass starts: kill it then, mid-pass
        wait_until(lambda: redis_server.client().get(lost_key) == b"1", 60, "the job's pass to start")
        killed = worker.kill_child(signal.SIGKILL)
        output = result.get(timeout=240)
        assert output["key"] == "kill/once.wav"
        listed = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/kill/")["Contents"]
        assert [item["Key"] for item in listed] == [f"{PREFIX}/kill/once.wav"]
        wait_until(lambda: f"{result.id}] succeeded" in worker.log(), 30, "the success log line")
        log = worker.log()
        assert f"Engine-0 (pid {killed}) exited with code -9" in log and "Engine-0 is back after 1 restart" in log
        assert len(re.findall(rf"Task f5tts.synthesize\[{result.id}\] succeeded", log)) == 1
        assert len(worker.children()) == 1 and worker.children()[0].pid != killed
        body = s3_server.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/kill/once.wav")["Body"].read()
        assert sf.info(io.BytesIO(body)).duration == pytest.approx(output["duration_s"], abs=1e-3)
        # stored: its history is forgotten (tidied a moment after the job's result)
        wait_until(lambda: redis_server.client().get(lost_key) is None, 10, "the job's lost-run count to be cleared")
    finally:
        worker.stop()


def test_s3_down_for_30_seconds_jobs_complete_through_retries(redis_server, prepared_random_weights, service_dir,
                                                              ref_wav_bytes, tmp_path):
    voices = tmp_path / "voices-dir"
    (voices / "voices").mkdir(parents=True)
    (voices / VOICE_KEY).write_bytes(ref_wav_bytes)  # the voice lives in a local folder; S3 only takes outputs
    s3 = S3Server(service_dir / "s3-outage").start()
    s3.create_bucket("outage")
    queue = own_queue("outage")
    env = worker_env(redis_server.url, "s3://outage/p", prepared_random_weights, s3.endpoint,
                     F5_VOICES_DIR=str(voices), S3_CONNECT_TIMEOUT="1", S3_READ_TIMEOUT="2", F5_QUEUE=queue)
    worker = WorkerProcess(env, service_dir / "logs", concurrency=1).start()
    try:
        client = plain_celery(redis_server.url)
        s3.stop()
        results = [client.send_task("f5tts.synthesize", kwargs={"job": job(f"Frase número {i}.", f"o/{i}.wav")},
                                    queue=queue) for i in range(3)]
        wait_until(lambda: worker.log().count("Retry in") >= 2, 60, "retries while S3 is down")
        time.sleep(30 - 3)  # 30 s of outage in all
        s3.start()
        outputs = [r.get(timeout=180) for r in results]
        assert sorted(o["key"] for o in outputs) == ["o/0.wav", "o/1.wav", "o/2.wav"]
        assert all(r.state == "SUCCESS" for r in results)
        from tests.services import letters_by_job_id

        assert not set(letters_by_job_id(redis_server.client())) & {o["job_id"] for o in outputs}
        keys = [item["Key"] for item in s3.client().list_objects_v2(Bucket="outage")["Contents"]]
        assert sorted(keys) == ["p/o/0.wav", "p/o/1.wav", "p/o/2.wav"]
        assert "StorageUnavailableError" in worker.log()
    finally:
        worker.stop()
        s3.stop()


def test_local_folder_backend_end_to_end(redis_server, prepared_random_weights, service_dir, ref_wav_bytes, tmp_path):
    out = tmp_path / "audio-out"
    (out / "voices").mkdir(parents=True)
    (out / VOICE_KEY).write_bytes(ref_wav_bytes)
    queue = own_queue("local")
    env = worker_env(redis_server.url, f"file://{out}", prepared_random_weights, F5_QUEUE=queue)
    worker = WorkerProcess(env, service_dir / "logs", concurrency=1).start()
    try:
        client = plain_celery(redis_server.url)
        payload = {"text": "Sancho Panza escuchaba con atención.", "voice": {"ref_audio": VOICE_KEY,
                                                                                "ref_text": REF_TEXT}}
        first = client.send_task("f5tts.synthesize", kwargs={"job": payload}, queue=queue).get(timeout=120)
        second = client.send_task("f5tts.synthesize", kwargs={"job": payload}, queue=queue).get(timeout=120)
        path = out / first["key"]
        assert first["key"].startswith("jobs/") and path.is_file()  # no key given: derived from content
        audio, rate = sf.read(path)
        assert rate == 24000 and len(audio) / rate == pytest.approx(first["duration_s"], abs=1e-3)
        assert second["skipped"] is True and second["sha256"] == first["sha256"]
        assert not list(out.rglob("*.part")), "no temporary files are left behind"
    finally:
        worker.stop()

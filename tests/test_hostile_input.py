"""Hostile input, table-driven, through a real worker: each case fails alone with a structured error and no retry,
the worker stays up, and the next good job works. Valid-but-unusual audio (stereo, 8 kHz) is accepted and rendered."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import BUCKET, PREFIX, REF_TEXT, VOICE_KEY, plain_celery
from tests.services import letters_by_job_id

pytestmark = pytest.mark.timeout(400)

GOOD_TEXT = "Una frase corriente."
OVERSIZED = 8 * 1024 * 1024 + 1  # the s3_worker reads at most 8 MiB of a reference (F5_MAX_REFERENCE_BYTES)


def _wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _voices(ref_wav_bytes: bytes) -> dict[str, bytes]:
    speech, rate = sf.read(io.BytesIO(ref_wav_bytes), dtype="float32")
    nan = speech.copy()
    nan[1000:1010] = np.nan
    return {
        "voices/h/not-audio.wav": b"this is a text file pretending to be audio\n" * 20,
        "voices/h/truncated.wav": ref_wav_bytes[:30],
        "voices/h/empty.wav": _wav(np.zeros(0, dtype=np.float32), 24000),
        "voices/h/ninety-seconds.wav": _wav(np.tile(speech, 18)[: 90 * 24000], 24000),
        "voices/h/nan.wav": _wav(nan, rate, subtype="FLOAT"),
        "voices/h/8khz.wav": _wav(speech[::3], 8000),
        "voices/h/stereo.wav": _wav(np.stack([speech, speech * 0.5], axis=1), rate),
        "voices/h/384khz.wav": _wav(np.tile(speech, 2)[: 384_000], 384_000),
        "voices/h/eight-channels.wav": _wav(np.tile(speech[:, None], (1, 8)), rate),
        "voices/h/oversized.wav": b"RIFF" + b"\0" * OVERSIZED,  # over F5_MAX_REFERENCE_BYTES of the s3_worker
    }


def _job(index: int, **overrides) -> dict:
    job = {"job_id": f"hostile-{index:02d}", "text": GOOD_TEXT,
           "voice": {"ref_audio": VOICE_KEY, "ref_text": REF_TEXT},
           "output": {"key": f"hostile/{index:02d}.wav"}, "params": {"nfe_step": 2, "seed": 1}}
    for path, value in overrides.items():
        target = job
        *parents, last = path.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return job


# (overrides, expected code or "ok", expected field prefix)
CASES = [
    # text
    ({"text": ""}, "invalid_job", "text"),
    ({"text": "   \n\t  "}, "invalid_job", "text"),
    ({"text": "Hola\x00mundo."}, "invalid_job", "text"),
    ({"text": "Campana\x07 y\x1b escape."}, "invalid_job", "text"),
    ({"text": "sur\ud800rogate"}, "invalid_job", "text"),
    ({"text": "a" * 10_000_000}, "invalid_job", "text"),
    ({"text": "x" * 100_000}, "invalid_job", "text"),
    ({"text": "🙂😀🎉🙃"}, "bad_text", "text"),
    ({"text": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝔣𝔯𝔞𝔨𝔱𝔲𝔯"}, "bad_text", "text"),
    ({"text": "שלום עולם, مرحبا بالعالم"}, "ok", None),  # right-to-left scripts the vocab knows are spoken
    ({"text": " ".join(["palabra"] * 450)}, "bad_text", "text"),
    ({"text": "¡¿...?!"}, "bad_text", "text"),
    # voice
    ({"voice.ref_audio": "voices/nobody.wav"}, "unknown_voice", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/not-audio.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/truncated.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/empty.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/ninety-seconds.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/nan.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/8khz.wav"}, "ok", None),
    ({"voice.ref_audio": "voices/h/stereo.wav"}, "ok", None),
    ({"voice.ref_audio": "voices/h/384khz.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/eight-channels.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "voices/h/oversized.wav"}, "bad_reference", "voice.ref_audio"),
    ({"voice.ref_audio": "http://169.254.169.254/latest/meta-data/"}, "bad_key", "voice.ref_audio"),
    ({"voice.ref_audio": "s3://another-bucket/voice.wav"}, "bad_key", "voice.ref_audio"),
    ({"voice.ref_audio": "../../etc/passwd"}, "bad_key", "voice.ref_audio"),
    ({"voice.ref_text": ""}, "invalid_job", "voice.ref_text"),
    ({"voice.extra": "x"}, "invalid_job", "voice.extra"),
    # params
    ({"params.nfe_step": "16"}, "invalid_job", "params.nfe_step"),
    ({"params.nfe_step": 16.5}, "invalid_job", "params.nfe_step"),
    ({"params.speed": "fast"}, "invalid_job", "params.speed"),
    ({"params.use_fp16": "yes"}, "invalid_job", "params.use_fp16"),
    ({"params.nfe_step": 0}, "invalid_job", "params.nfe_step"),
    ({"params.nfe_step": 129}, "invalid_job", "params.nfe_step"),
    ({"params.speed": 0}, "invalid_job", "params.speed"),
    ({"params.speed": -1.0}, "invalid_job", "params.speed"),
    ({"params.speed": 4.5}, "invalid_job", "params.speed"),
    ({"params.cfg_strength": -0.5}, "invalid_job", "params.cfg_strength"),
    ({"params.cfg_strength": 11}, "invalid_job", "params.cfg_strength"),
    ({"params.seed": -1}, "invalid_job", "params.seed"),
    ({"params.temperature": 0.7}, "invalid_job", "params.temperature"),
    ({"priority": "high"}, "invalid_job", "priority"),
    # keys
    ({"output.key": "../escape.wav"}, "bad_key", "output.key"),
    ({"output.key": "/etc/cron.d/x.wav"}, "bad_key", "output.key"),
    ({"output.key": "%2e%2e/%2e%2e/x.wav"}, "bad_key", "output.key"),
    ({"output.key": "a\\..\\..\\x.wav"}, "bad_key", "output.key"),
    ({"output.key": "k" * 2000 + ".wav"}, "bad_key", "output.key"),
    ({"output.key": "books/./x.wav"}, "bad_key", "output.key"),
    ({"output.key": "s3://other-bucket/x.wav"}, "bad_key", "output.key"),
    ({"output.key": "books/x.mp3"}, "invalid_job", "output.key"),
    ({"output.key": "voices/narrador.wav"}, "bad_key", "output.key"),  # a job may not overwrite a narrator
    ({"output.key": "€" * 500 + ".wav"}, "bad_key", "output.key"),  # 504 characters, 1,504 UTF-8 bytes
    ({"job_id": "../../x"}, "invalid_job", "job_id"),
    ({"metadata": {"blob": "m" * 20_000}}, "invalid_job", "metadata"),
]


def test_hostile_input_table(s3_worker, redis_server, s3_server, ref_wav_bytes):
    assert len(CASES) >= 40
    s3 = s3_server.client()
    for key, data in _voices(ref_wav_bytes).items():
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=data)
    children_before = sorted(p.pid for p in s3_worker.children())
    client = plain_celery(redis_server.url)
    sent = [client.send_task("f5tts.synthesize", kwargs={"job": _job(i, **overrides)}, queue="f5tts")
            for i, (overrides, _, _) in enumerate(CASES)]
    failures = []
    for index, ((overrides, expected, field), result) in enumerate(zip(CASES, sent, strict=True)):
        try:
            output = result.get(timeout=240, propagate=False)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append((index, overrides, f"no answer: {exc}"))
            continue
        if expected == "ok":
            if result.state != "SUCCESS":
                failures.append((index, list(overrides), f"expected success, got {result.state}: {output}"))
            continue
        error = result.result
        code, message, where = ((*error.args, None, None, None))[:3] if isinstance(error, Exception) else ("?", "", "")
        if result.state != "FAILURE" or code != expected or not str(where or "").startswith(field) or not message:
            failures.append((index, list(overrides), f"{result.state} {code!r} {where!r} {message!r}"))
        if result.retries not in (0, None):
            failures.append((index, list(overrides), f"retried {result.retries} times"))
    assert not failures, "\n".join(map(str, failures))
    letters = letters_by_job_id(redis_server.client())
    failing = [i for i, (_, expected, _) in enumerate(CASES) if expected != "ok"]
    claimed = [i for i in failing if "job_id" not in CASES[i][0]]
    assert all(letters[f"hostile-{i:02d}"]["retries"] == 0 for i in claimed)
    assert sorted(p.pid for p in s3_worker.children()) == children_before, "no pool process crashed"
    heavy = [_job(60 + i, text="palabra " * 500, **{"params.nfe_step": 128}) for i in range(64)]  # hours of work
    batch = client.send_task("f5tts.synthesize_batch", kwargs={"jobs": heavy}, queue="f5tts")
    with pytest.raises(Exception, match="characters × NFE steps"):
        batch.get(timeout=120)
    assert batch.state == "FAILURE" and (batch.retries or 0) == 0
    letters = letters_by_job_id(redis_server.client())
    assert {letters[f"hostile-{60 + i:02d}"]["code"] for i in range(64)} == {"invalid_job"}
    assert not any(k.startswith(f"{PREFIX}/hostile/6") for k in _listed(s3))
    good = client.send_task("f5tts.synthesize", kwargs={"job": _job(99)}, queue="f5tts").get(timeout=120)
    assert good["key"] == "hostile/99.wav"
    oks = {f"{PREFIX}/hostile/{i:02d}.wav" for i, (_, e, _) in enumerate(CASES) if e == "ok"}
    assert set(_listed(s3)) == oks | {f"{PREFIX}/hostile/99.wav"}
    narrator = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{VOICE_KEY}")["Body"].read()
    assert narrator == ref_wav_bytes  # the job that named it as its output wrote nothing


def _listed(s3, prefix: str = f"{PREFIX}/hostile/") -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]

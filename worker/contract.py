"""The job contract, version 1: what a job, its result and its error look like on the wire.

This module is imported by the worker, the producer and anything else that builds jobs, so it must stay free of torch
and of Celery. The JSON Schema in ``schema/job.schema.json`` is generated from these models (``python -m
worker.contract``) and a test keeps the two in sync.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.constants import CONTRACT_VERSION
from worker.keys import derived_output_key, refuse_reserved, validate_key

MAX_TEXT_CHARS = 4_000
# One synthesize_batch message is one unit of retry and of time limit: bound what it may ask for.
MAX_BATCH_JOBS = 64
MAX_BATCH_WORK = 64 * 1_000 * 32  # characters × NFE steps: 64 jobs of 1,000 characters at NFE 32
MAX_REF_TEXT_CHARS = 1_000
MAX_METADATA_BYTES = 16_384
MAX_SEED = 2**63 - 1
_DERIVED_SEED_MODULUS = 2**31


def derive_seed(content_hash: str) -> int:
    """A seed from a content hash: the same job always gets the same noise, on any worker, in any language."""
    return int(content_hash[:16], 16) % _DERIVED_SEED_MODULUS


def retake_seed(first_seed: int, attempt: int) -> int:
    """The seed of take ``attempt``: the first take keeps the job's own seed (so its audio is the normal render);
    later ones get a seed hashed from it, the same on every worker, so a re-sent re-render reproduces its take."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if attempt == 1:
        return first_seed
    digest = hashlib.blake2b(f"{first_seed}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _DERIVED_SEED_MODULUS


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ue000-\uf8ff]")


def _check_text(value: str, what: str) -> str:
    """Refuse text that cannot be spoken or cannot even be encoded, with the reason in words."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode (a lone surrogate at position {exc.start})") from None
    if not value.strip():
        raise ValueError(f"{what} is empty or only whitespace")
    match = _CONTROL.search(value)
    control: str | None = None
    position = 0
    if match is not None:
        control, position = match.group(), match.start()
    elif not value.isascii():  # unassigned code points and private-use planes
        control = next((c for c in set(value) if unicodedata.category(c) in ("Cn", "Co")), None)
        position = value.index(control) if control is not None else 0
    if control is not None:
        raise ValueError(f"{what} contains the control character U+{ord(control):04X} at position {position}")
    return value


class _Strict(BaseModel):
    """Unknown fields are refused, not ignored: a typo in a parameter name must not silently change nothing."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class JobParams(_Strict):
    """Sampling parameters. Defaults match upstream F5-TTS except ``nfe_step`` (16, the batch-friendly setting)."""

    nfe_step: int = Field(16, ge=1, le=128, description="Flow-matching steps (NFE). 32 is upstream's quality default.")
    cfg_strength: float = Field(2.0, ge=0.0, le=10.0, description="Classifier-free guidance strength.")
    sway_sampling_coef: float = Field(-1.0, ge=-1.0, le=1.0, description="Sway sampling coefficient.")
    speed: float = Field(1.0, gt=0.0, le=4.0, description="Speaking rate; scales the generated duration.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Noise seed. Absent: derived from the job's content (reproducible)."
    )
    use_fp16: bool = Field(
        True, description="false runs this job in fp32 on the worker; true uses the worker's precision policy."
    )


class VoiceSpec(_Strict):
    ref_audio: str = Field(
        ..., description="Key of the reference clip under the storage prefix (or the worker's voices folder)."
    )
    ref_text: str = Field(
        ..., min_length=1, max_length=MAX_REF_TEXT_CHARS, description="Exact transcript of the reference clip."
    )
    preprocess: bool = Field(
        True, description="Clip to 12 s at a silence and trim the edges, as upstream does. false: use it as given."
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the clip's bytes as the sender saw them. Set: the audio's identity follows the clip's "
                    "bytes, not its name, and a job finds a different clip under ref_audio refused (voice_changed).")

    @field_validator("ref_audio")
    @classmethod
    def _ref_audio_is_a_key(cls, value: str) -> str:
        validate_key(value, field="voice.ref_audio")
        return value

    @field_validator("ref_text")
    @classmethod
    def _ref_text_is_text(cls, value: str) -> str:
        return _check_text(value, "voice.ref_text")


class OutputSpec(_Strict):
    key: str | None = Field(None, description="Object key under the storage prefix. Absent: derived from content.")

    @field_validator("key")
    @classmethod
    def _key_is_safe(cls, value: str | None) -> str | None:
        if value is not None:
            refuse_reserved(validate_key(value, field="output.key"))
            if not value.endswith(".wav"):
                raise ValueError("output.key must end with .wav (the worker writes WAV)")
        return value


class QASpec(_Strict):
    """The quality gate for this job (see ``worker.qa``): which take it renders, how many takes it may get, and
    whether a recogniser checks that the take says its words."""

    attempt: int = Field(1, ge=1, le=64, description="The take this job renders. 1 writes output.key; a later take "
                         "writes beside it (….takeN.wav) with its own seed, and the best take ends at output.key.")
    max_attempts: int = Field(3, ge=1, le=16, description="Takes a failing segment gets before needs_review.")
    asr: bool = Field(False, description="Also transcribe the take on the QA queue and score it (CER).")
    lang: str | None = Field(None, pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$",
                             description="The text's language, for the recogniser and the number reading.")
    max_cer: float | None = Field(None, ge=0, le=1, description="Highest character error rate that passes.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="This take's own seed (a re-render by hand); "
                             "default: derived from the job's seed and the attempt.")
    manual: bool = Field(False, description="A take asked for by a person (the review page, f5-batch rerender): "
                         "judged like the others, it never leads to more automatic takes.")


class Job(_Strict):
    """One piece of text to speak in one voice, and where to put the audio."""

    version: Literal[1] = Field(CONTRACT_VERSION, description="Contract version.")
    job_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._:\-]{1,128}$", description="Caller's id. Absent: derived from content."
    )
    text: str = Field(..., description="Text to synthesise.",
                      json_schema_extra={"minLength": 1, "maxLength": MAX_TEXT_CHARS})
    voice: VoiceSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    params: JobParams = Field(default_factory=JobParams)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Caller data, echoed in the result.")
    qa: QASpec | None = Field(None, description="Quality gate: checks and best-of-N re-renders. Absent: none.")

    @field_validator("text")
    @classmethod
    def _text_is_text(cls, value: str) -> str:
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(
                f"text has {len(value)} characters; a job carries at most {MAX_TEXT_CHARS}. Split long texts into "
                "segments with the producer (f5-batch enqueue), which also keeps chapters in order")
        return _check_text(value, "text")

    @field_validator("metadata")
    @classmethod
    def _metadata_is_small_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes of JSON; at most {MAX_METADATA_BYTES} are carried")
        return value

    def content_hash(self) -> str:
        """Hash of everything that shapes the audio except the model; stable across processes and languages."""
        params = self.params.model_dump()
        params["seed"] = self.params.seed
        payload: dict[str, Any] = {
            "text": self.text,
            "ref_audio": self.voice.ref_audio,
            "ref_text": self.voice.ref_text,
            "preprocess": self.voice.preprocess,
            "params": params,
        }
        if self.voice.sha256 is not None:  # only when given, so that the hashes of jobs without it stay as they were
            payload["ref_sha256"] = self.voice.sha256
        canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def base_seed(self) -> int:
        """The given seed, or one derived from content, so a redelivered job reproduces its audio exactly."""
        if self.params.seed is not None:
            return self.params.seed
        return derive_seed(self.content_hash())

    def resolved_seed(self) -> int:
        """The seed of the take this job renders: the base seed for the first, a derived one for later takes."""
        if self.qa is None or self.qa.attempt == 1:
            return self.base_seed()
        return self.qa.seed if self.qa.seed is not None else retake_seed(self.base_seed(), self.qa.attempt)

    def store_key(self) -> str:
        """Where this take is written: ``output.key`` for the first take, ``….takeN.wav`` beside it for take N."""
        key = self.resolved_key()
        if self.qa is None or self.qa.attempt == 1:
            return key
        return f"{key.removesuffix('.wav')}.take{self.qa.attempt}.wav"

    def resolved_job_id(self) -> str:
        return self.job_id or self.content_hash()[:32]

    def resolved_key(self) -> str:
        return self.output.key or derived_output_key(self.content_hash())

    def job_hash(self, model_fingerprint: str, precision: str, clip_sha256: str) -> str:
        """What a stored object is compared against to decide whether a re-run can be skipped: everything that
        determines the audio (the content, which fixes the seed; the reference clip by its bytes, whatever its name;
        the model's files by digest; the precision it ran at)."""
        identity = f"{self.content_hash()}|{model_fingerprint}|{precision}|{clip_sha256}"
        return hashlib.sha256(identity.encode()).hexdigest()

    def identity(self) -> str:
        """One output of one content: what bookkeeping is keyed by (dead letters, lost-run counts). Two unrelated
        jobs that a caller named alike, or the same text sent to two keys, never share an entry."""
        return hashlib.sha256(f"{self.resolved_key()}\n{self.content_hash()}".encode()).hexdigest()[:32]

    def task_id(self) -> str:
        """The Celery task id a single job is first sent under: the same job (content and output key) gets the same
        id from any client. Sending it again (``resume``, the gateway) uses a fresh id, so that no stale state of an
        earlier run (a FAILURE, a revocation) answers for the new one."""
        return f"{self.resolved_job_id()}.{self.identity()[:12]}"

    def params_hash(self) -> str:
        canonical = json.dumps(self.params.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Timings(BaseModel):
    """Where a job's time went, stage by stage (what a lone job waits for beyond its own inference)."""

    queue_s: float | None = Field(None, description="From publish to start of work (needs the sent timestamp).")
    check_s: float | None = Field(None, description="Skip check and reference clip, before the engine.")
    prepare_s: float | None = Field(None, description="In the engine: reference, chunks and tokens.")
    engine_wait_s: float | None = Field(None, description="In the engine: prepared, until its first pass started.")
    inference_s: float = 0.0
    finish_s: float | None = Field(None, description="In the engine: cross-fade and the copy to the host.")
    transfer_s: float | None = Field(None, description="The hand-over to the engine process and back, and what "
                                     "the engine did beside the stages above.")
    encode_s: float | None = Field(None, description="WAV encoding.")
    upload_s: float = 0.0
    batch_wait_s: float | None = Field(None, description="Time spent waiting to share a pass with other jobs.")


class JobResult(BaseModel):
    """What a finished job returns (and what ``synthesize_batch`` returns per successful item)."""

    job_id: str
    key: str
    bytes: int
    sha256: str
    duration_s: float
    sample_rate: int
    seed: int
    skipped: bool
    timings: Timings
    rtf: float | None
    precision: str
    model: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class JobError(BaseModel):
    """A bad-input failure, as a structured value."""

    code: str
    message: str
    field: str | None = None


class BatchItemResult(BaseModel):
    """One entry of a ``synthesize_batch`` result: either ``result`` or ``error`` is set."""

    job_id: str | None
    ok: bool
    result: JobResult | None = None
    error: JobError | None = None


def batch_work_problem(jobs: list[Any]) -> str | None:
    """Why a batch asks for too much work in one message, or None. (Malformed items fail alone later.)"""
    work = 0
    for job in jobs:
        if isinstance(job, dict) and isinstance(job.get("text"), str):
            params = job.get("params")
            if not isinstance(params, dict):
                params = {}
            steps = params.get("nfe_step", JobParams.model_fields["nfe_step"].default)
            work += len(job["text"]) * (steps if isinstance(steps, int) and steps > 0 else 1)
    if work > MAX_BATCH_WORK:
        return (f"this batch asks for {work:,} characters × NFE steps of work; one message carries at most "
                f"{MAX_BATCH_WORK:,} (for example 64 jobs of 1,000 characters at NFE 32): split it")
    return None


def job_json_schema() -> dict[str, Any]:
    schema = Job.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/f5-batch/f5-batch/schema/job.schema.json"
    schema["title"] = "f5-batch job (contract v1)"
    return schema


def schema_text() -> str:
    return json.dumps(job_json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")

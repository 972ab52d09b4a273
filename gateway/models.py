"""What the gateway's endpoints take and return. The job itself is the contract's ``Job``; ``/tts`` takes the seed's
request shape, with the same bounds as the contract's parameters (their fields are reused, not rewritten)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.contract import MAX_TEXT_CHARS, Job, JobParams, JobResult

_P = JobParams.model_fields


class TTSRequest(BaseModel):
    """The seed project's ``POST /tts`` body, plus upstream's ``cfg_strength``, ``speed``, ``seed`` and a ``voice``.
    Unknown fields are refused and types are not coerced, as for a contract job."""

    model_config = ConfigDict(extra="forbid", strict=True)

    gen_text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Text to speak.")
    ref_text: str = Field("", max_length=1000, description="Transcript of the voice's clip; empty: the voice's own.")
    nfe_step: int = _P["nfe_step"]
    use_fp16: bool = _P["use_fp16"]
    cfg_strength: float = _P["cfg_strength"]
    speed: float = _P["speed"]
    seed: int | None = _P["seed"]
    voice: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                              description="A voice added with `f5-batch voice add`; default: F5_DEFAULT_VOICE.")


class ErrorBody(BaseModel):
    """Every error the gateway returns."""

    code: str
    message: str
    field: str | None = None


class JobAccepted(BaseModel):
    id: str = Field(..., description="The job's id here (its Celery task id).")
    job_id: str = Field(..., description="The contract's job id (given, or derived from the content).")
    status_url: str
    audio_url: str


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[Job] = Field(..., min_length=1, max_length=1000)


class BatchAccepted(BaseModel):
    jobs: list[JobAccepted]


JobState = Literal["queued", "running", "retrying", "succeeded", "failed"]


class JobStatus(BaseModel):
    id: str
    job_id: str
    state: JobState
    celery_state: str
    result: JobResult | None = None
    error: ErrorBody | None = None
    audio_url: str | None = None


class BookCounts(BaseModel):
    """The counts ``f5-batch status`` shows, with the failures' reasons."""

    book: str
    total: int
    done: int
    failed: int
    running: int
    retrying: int
    revoked: int
    queued: int
    failures: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Health(BaseModel):
    ok: bool
    broker: bool | None = None
    workers: int | None = None
    reasons: list[str] = Field(default_factory=list)

"""What the gateway's endpoints take and return. The job itself is the contract's ``Job``; ``/tts`` takes the seed's
request shape, with the same bounds as the contract's parameters (their fields are reused, not rewritten)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.contract import MAX_TEXT_CHARS, Job, JobParams, JobResult, QASpec
from worker.qa.reasons import Reason


def _same_as(model: type[BaseModel], name: str) -> Any:
    """A contract field (bounds, default, description) reused as it is, so that each is written once. Typed as
    pydantic's ``Field`` is: the checker takes it as the field's default."""
    return model.model_fields[name]


class TTSRequest(BaseModel):
    """The seed project's ``POST /tts`` body, plus upstream's ``cfg_strength``, ``speed``, ``seed`` and a ``voice``.
    Unknown fields are refused and types are not coerced, as for a contract job."""

    model_config = ConfigDict(extra="forbid", strict=True)

    gen_text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Text to speak.")
    ref_text: str = Field("", max_length=1000, description="Transcript of the voice's clip; empty: the voice's own.")
    nfe_step: int = _same_as(JobParams, "nfe_step")
    use_fp16: bool = _same_as(JobParams, "use_fp16")
    cfg_strength: float = _same_as(JobParams, "cfg_strength")
    speed: float = _same_as(JobParams, "speed")
    seed: int | None = _same_as(JobParams, "seed")
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
    qa: dict[str, int] | None = Field(None, description="The quality gate's counts, as `f5-batch status` shows them "
                                      "(passed, rerendered, needs_review, accepted, pending, unchecked).")


class Health(BaseModel):
    ok: bool
    broker: bool | None = None
    workers: int | None = None
    reasons: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------- review page


class DiffWord(BaseModel):
    """One word of a segment's text (``missing``: the recogniser did not hear it) or of its transcript (``extra``:
    heard, but not in the text), so that a reviewer sees at a glance what a take skipped or invented."""

    word: str
    mark: Literal["missing", "extra"] | None = None


class ReviewTake(BaseModel):
    attempt: int
    seed: int
    passed: bool
    score: float
    cer: float | None = None
    transcript: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    manual: bool = False
    audio_url: str | None = Field(None, description="None when another take replaced it at the segment's key.")


class ReviewItem(BaseModel):
    """A flagged segment as the review page shows it: ``worker.books.review.Flagged``, with audio URLs and diffs."""

    id: str
    chapter: int
    index: int
    text: str = Field(..., description="What is spoken (the normalised text).")
    raw: str = Field(..., description="The source text.")
    state: str
    best: int | None = None
    score: float | None = None
    cer: float | None = None
    transcript: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    attempts: list[ReviewTake] = Field(default_factory=list)
    audio_url: str | None = Field(None, description="The kept take.")
    text_diff: list[DiffWord] = Field(default_factory=list)
    heard_diff: list[DiffWord] = Field(default_factory=list)
    awaiting: bool = Field(False, description="Its text was edited and the new text's first take is not judged yet.")


class ReviewList(BaseModel):
    """What ``f5-batch review BOOK --json`` prints, for the page to poll."""

    book: str
    version: int
    counts: dict[str, int]
    flagged: list[ReviewItem]


class RerenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = _same_as(QASpec, "seed")


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="What the segment should say.")


class ReviewAction(BaseModel):
    """What an action did: the record's new state (accept), the take sent (rerender), the new text (edit)."""

    id: str
    action: Literal["accept", "rerender", "edit"]
    state: str | None = None
    attempt: int | None = None
    seed: int | None = None
    text: str | None = None
    version: int | None = None

"""The gateway's endpoints. Each reads the service from the app's state; the jobs and books routes need a token."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from celery.result import AsyncResult
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from gateway.errors import TTS_FIELDS, ApiError, job_failure, status_for, validation_error
from gateway.models import (
    BatchAccepted,
    BatchRequest,
    BookCounts,
    ErrorBody,
    Health,
    JobAccepted,
    JobState,
    JobStatus,
    TTSRequest,
)
from gateway.service import GatewayService, Sent
from worker.books.review import qa_counts
from worker.books.status import book_status, manifest_from_storage
from worker.constants import PRIORITY_INTERACTIVE, PRIORITY_JOBS
from worker.contract import Job, JobParams, JobResult, VoiceSpec
from worker.runtime.deadletter import DeadLetters
from worker.runtime.takes import TakeRecords
from worker.storage import ObjectNotFound

STATES: dict[str, JobState] = {"PENDING": "queued", "RECEIVED": "queued", "STARTED": "running", "RETRY": "retrying",
          "SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "failed"}
WAV = {"content": {"audio/wav": {}}, "description": "The WAV."}


def service(request: Request) -> GatewayService:
    svc: GatewayService = request.app.state.service
    return svc


def _audio_key(result: AsyncResult[Any]) -> str:
    """Where a succeeded job's audio is (the ``key`` of its result)."""
    value = result.result
    key = value.get("key") if isinstance(value, dict) else None
    if not isinstance(key, str):
        raise ApiError(500, "internal_error", f"the job's result names no audio; the operator can look it up by its "
                       f"task id, {result.id}")
    return key


Service = Annotated[GatewayService, Depends(service)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(
    auto_error=False, description="A token from F5_GATEWAY_TOKENS."))]


async def token(request: Request, credentials: Credentials) -> None:
    """A valid token, within its rate. (Async: no server thread is spent on it.)"""
    request.app.state.rate_limit.take(request.app.state.auth.check(credentials))


open_routes = APIRouter()
routes = APIRouter(dependencies=[Depends(token)])


def _accepted(sent: Sent) -> JobAccepted:
    return JobAccepted(id=sent.id, job_id=sent.job_id, status_url=f"/v1/jobs/{sent.id}",
                       audio_url=f"/v1/jobs/{sent.id}/audio")


def _room(svc: GatewayService) -> None:
    if svc.queue_full():
        raise ApiError(503, "queue_full", f"the queue holds {svc.settings.gateway.max_queued} jobs or more; try "
                       "again later", headers={"Retry-After": "10"})


def _tts_job(svc: GatewayService, body: TTSRequest) -> Job:
    voice = svc.voice(body.voice)
    try:
        return Job(text=body.gen_text, voice=VoiceSpec(ref_audio=voice.ref_audio, ref_text=body.ref_text or
                                                       voice.ref_text),
                   params=JobParams(nfe_step=body.nfe_step, cfg_strength=body.cfg_strength, speed=body.speed,
                                    seed=body.seed, use_fp16=body.use_fp16))
    except ValidationError as exc:
        raise validation_error(exc, TTS_FIELDS) from None


@routes.post("/tts", response_class=Response, responses={200: WAV, 202: {"model": JobAccepted}, 504: {
    "model": ErrorBody}})
async def tts(body: TTSRequest, svc: Service) -> Response:
    """Speak ``gen_text`` in a voice and return the WAV: one job at the highest priority, so that it does not wait
    behind books. Not done within ``F5_GATEWAY_TTS_TIMEOUT`` (a busy queue, a worker still warming up, no worker at
    all): 202 with the job's URLs, and ``Location`` to follow until its audio is there."""

    def send() -> Sent:
        _room(svc)
        return svc.send(_tts_job(svc, body), PRIORITY_INTERACTIVE)

    sent = await anyio.to_thread.run_sync(send)
    result = await svc.finished(sent.id, svc.settings.gateway.tts_timeout_s)
    if result is None:
        return JSONResponse(_accepted(sent).model_dump(), 202, headers={"Location": f"/v1/jobs/{sent.id}"})
    if result.state != "SUCCESS":
        error = job_failure(result)
        raise ApiError(status_for(error.code), error.code, error.message, TTS_FIELDS.get(error.field or "",
                                                                                      error.field))
    audio = await anyio.to_thread.run_sync(svc.storage.get, _audio_key(result))
    return Response(audio, media_type="audio/wav")


@routes.post("/v1/jobs", status_code=202, response_model=JobAccepted)
def submit(job: Job, svc: Service) -> JSONResponse:
    """Queue one contract job; its id, status and audio URLs come back at once. Its ``output.key``, if it names one,
    lies under the gateway's namespace (``F5_GATEWAY_KEY_PREFIX``, ``api/`` by default)."""
    _room(svc)
    sent = _accepted(svc.send(job, PRIORITY_JOBS))
    return JSONResponse(sent.model_dump(), 202, headers={"Location": sent.status_url})


@routes.post("/v1/jobs:batch", status_code=202, response_model=BatchAccepted)
def submit_many(body: BatchRequest, svc: Service) -> BatchAccepted:
    """Queue many contract jobs, each its own task (its own id, status and audio)."""
    _room(svc)
    for job in body.jobs:  # all or nothing: refuse the batch before any of it is sent
        svc.check_key(job)
    return BatchAccepted(jobs=[_accepted(svc.send(job, PRIORITY_JOBS)) for job in body.jobs])


def _known(svc: GatewayService, job_id: str) -> Sent:
    sent = svc.registry.find(job_id)
    if sent is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} was accepted here (or its record expired)")
    return sent


@routes.get("/v1/jobs/{job_id}", response_model=JobStatus)
def job_status(job_id: str, svc: Service) -> JobStatus:
    """The job's state, and its result or its structured error."""
    sent = _known(svc, job_id)
    result: AsyncResult[Any] = AsyncResult(sent.id, app=svc.app)
    state: str = result.state  # any of Celery's states (REVOKED, RECEIVED…), not only the five its stubs list
    status = JobStatus(id=sent.id, job_id=sent.job_id, state=STATES.get(state, "queued"), celery_state=state)
    if state == "SUCCESS":
        status.result, status.audio_url = JobResult.model_validate(result.result), f"/v1/jobs/{sent.id}/audio"
    elif state == "FAILURE":
        status.error = job_failure(result)
    elif state == "REVOKED":
        status.error = ErrorBody(code="revoked", message="the job was revoked")
    return status


@routes.get("/v1/jobs/{job_id}/audio", response_class=Response, responses={
    200: WAV, 307: {"description": "A presigned S3 URL."}, 409: {"model": ErrorBody}})
def job_audio(job_id: str, svc: Service) -> Response:
    """The job's WAV streamed from storage (or, with ``F5_GATEWAY_AUDIO_REDIRECT``, a presigned S3 URL)."""
    sent = _known(svc, job_id)
    result: AsyncResult[Any] = AsyncResult(sent.id, app=svc.app)
    if result.state != "SUCCESS":
        raise ApiError(409, "not_ready", f"the job is {STATES.get(result.state, 'queued')}")
    key = _audio_key(result)
    info = svc.storage.head(key)
    if info is None:
        raise ApiError(404, "audio_gone", f"the audio at {key!r} is no longer in storage")
    if svc.settings.gateway.audio_redirect and svc.presigner is not None:
        return RedirectResponse(svc.presigner.presigned_url(key), 307)
    try:
        blocks = svc.storage.open(key)
    except ObjectNotFound:
        raise ApiError(404, "audio_gone", f"the audio at {key!r} is no longer in storage") from None
    return StreamingResponse(blocks, media_type="audio/wav", headers={"Content-Length": str(info.size)})


@routes.get("/v1/books/{book}", response_model=BookCounts)
def book(book: str, svc: Service) -> BookCounts:
    """The counts ``f5-batch status BOOK`` shows: done, queued, running, retrying, revoked, failed (with reasons)."""
    prefix = svc.settings.gateway.prefix
    try:
        entries = manifest_from_storage(svc.storage, prefix, book)
    except FileNotFoundError:
        raise ApiError(404, "unknown_book", f"no manifest for book {book!r} under {prefix!r}") from None
    status = book_status(svc.app, svc.storage, DeadLetters.for_results(svc.settings.broker), entries, prefix, book)
    records = TakeRecords.for_results(svc.settings.broker).by_key(book, [e.key for e in entries])
    return BookCounts(book=book, **status.summary(), failures=status.failed, qa=qa_counts(records, entries))


@routes.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus metrics of the gateway."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@open_routes.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The gateway process answers (no token: for probes; it tells nothing else)."""
    return Health(ok=True)


@open_routes.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(svc: Service) -> JSONResponse:
    """The broker is reachable and at least one worker answers (no token: for load balancers). Both are read at most
    every two seconds, whatever the rate of probes."""
    broker = await anyio.to_thread.run_sync(svc.broker_ok)
    workers = await anyio.to_thread.run_sync(svc.workers) if broker else 0
    reasons = ([] if broker else ["the broker cannot be reached"]) + ([] if workers or not broker
                                                                      else ["no worker answers"])
    health = Health(ok=not reasons, broker=broker, workers=workers, reasons=reasons)
    return JSONResponse(health.model_dump(), 200 if health.ok else 503)

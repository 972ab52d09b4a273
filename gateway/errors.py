"""Every error the gateway returns has the contract's shape, ``{"code", "message", "field"}``."""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.models import ErrorBody
from worker.errors import BadInputError

TTS_FIELDS = {"text": "gen_text", "voice.ref_text": "ref_text", "voice": "voice"}  # job field -> /tts field


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.body, self.headers = status, ErrorBody(code=code, message=message, field=field), headers


def _field(loc: tuple[int | str, ...]) -> str | None:
    return ".".join(str(part) for part in loc if part != "body") or None


def validation_error(exc: RequestValidationError | ValidationError, rename: dict[str, str] | None = None) -> ApiError:
    """422 naming the first offending field (in the request's own terms), with up to five problems in words."""
    errors = exc.errors()
    field = _field(tuple(errors[0]["loc"])) if errors else None
    if rename and field:
        field = rename.get(field, field)
    summary = "; ".join(f"{_field(tuple(e['loc'])) or 'body'}: {e['msg']}" for e in errors[:5]) or "invalid body"
    return ApiError(422, "invalid_job", summary, field)


# Failures that are not the caller's: their messages name buckets, keys and endpoints, which are the operator's, not
# the API client's. The client gets the code and the task id to quote; the detail stays in the dead letter and logs.
INTERNAL_CODES = ("internal_error", "retries_exhausted", "worker_lost")


def job_failure(result: AsyncResult[Any]) -> ErrorBody:
    """The structured error of a failed job, as the worker raised it (internal detail withheld)."""
    error = result.result
    if isinstance(error, BadInputError):
        body = ErrorBody(code=error.code, message=error.message, field=error.field)
    else:
        args: tuple[object, ...] = getattr(error, "args", ())
        match args:
            case (str(code), str(message), str() | None as field):  # a BadInputError, by name
                body = ErrorBody(code=code, message=message, field=field)
            case _:
                body = ErrorBody(code="internal_error", message=f"{type(error).__name__}: {error}")
    if body.code in INTERNAL_CODES:
        return ErrorBody(code=body.code, message=f"the job failed on the worker's side ({body.code}); the operator "
                         f"can look it up by its task id, {result.id}", field=None)
    return body


def status_for(code: str) -> int:
    if code == "time_limit":
        return 504
    return 500 if code in ("internal_error", "retries_exhausted", "worker_lost") else 400


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), exc.status, headers=exc.headers)

    @app.exception_handler(BadInputError)
    async def bad_input(request: Request, exc: BadInputError) -> JSONResponse:
        return JSONResponse(ErrorBody(code=exc.code, message=exc.message, field=exc.field).model_dump(),
                            status_for(exc.code))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc, TTS_FIELDS if request.url.path == "/tts" else None)
        return JSONResponse(error.body.model_dump(), error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: object = exc.detail  # a str for Starlette, anything for FastAPI's (ours carry the error body)
        body = detail if isinstance(detail, dict) else {"code": "http_error", "message": str(detail), "field": None}
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

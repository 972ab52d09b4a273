"""The gateway's ASGI app: the seed's ``/tts``, the jobs API, books, the review page, health and metrics.

FastAPI (on Starlette): the job body *is* the contract's pydantic ``Job``, so validation, unknown-field refusal and the
OpenAPI document come from the same models as the worker's, with no second description to keep in step.

Errors always have the contract's shape, ``{"code", "message", "field"}``: 422 for a body that does not validate (the
field is named), 400 for a job the worker refused (bad text, unknown voice...), 401 without a valid token, 404 for an
unknown job or book, 409 for audio not ready yet, 413 for a body over the limit (refused before it is parsed), 429 with
``Retry-After`` for a token over its rate, 503 with ``Retry-After`` when the queue is full, 504 when a job ran past its
time limit.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from gateway import errors
from gateway.limits import BodyLimit
from gateway.metrics import RequestMetrics
from gateway.models import ErrorBody
from gateway.review import pages as review_pages
from gateway.review import router as review_routes
from gateway.routes import open_routes, routes
from gateway.security import BearerAuth, RateLimit, SessionCookies, check_configuration
from gateway.service import GatewayService
from worker.settings import Settings

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 503)}


def create_app(settings: Settings, service: GatewayService) -> FastAPI:
    gateway = settings.gateway
    tokens = tuple(token.get_secret_value() for token in gateway.tokens)
    check_configuration(tokens, gateway.open)
    app = FastAPI(title="f5-batch gateway", version="1", description=__doc__, responses=ERRORS)
    app.state.service = service
    app.state.auth = BearerAuth(tokens, gateway.open)
    app.state.rate_limit = RateLimit(gateway.rate_per_s, gateway.rate_burst)
    app.state.sessions = SessionCookies(tokens)  # the review page's cookie (a browser's <audio> sends no header)
    errors.install(app)
    app.include_router(routes)
    app.include_router(review_routes)
    app.include_router(review_pages)
    app.include_router(open_routes)
    if gateway.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(gateway.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(RequestMetrics)
    app.add_middleware(BodyLimit, max_bytes=gateway.max_body_bytes)
    return app

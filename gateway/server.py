"""Running the gateway: ``f5-batch serve --host H --port P`` (uvicorn), and its OpenAPI document."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def build() -> FastAPI:
    """The app from the environment's settings, with the worker's Celery app and the configured storage."""
    from gateway.app import create_app
    from gateway.service import GatewayService
    from worker.celery_app import app as celery_app
    from worker.celery_app import publish_through_the_hardened_transport, settings
    from worker.storage import by_url

    publish_through_the_hardened_transport(celery_app, settings)
    return create_app(settings, GatewayService(settings, celery_app, by_url(settings.storage.storage_url,
                                                                            settings.storage)))


def serve(host: str, port: int, workers: int = 1) -> None:
    import anyio.to_thread
    import uvicorn

    app = build()

    @app.on_event("startup")
    async def _threads() -> None:  # each waiting /tts holds a thread: allow many
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256

    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=True, server_header=False)


def openapi_text() -> str:
    """The OpenAPI document, as committed in ``schema/gateway.openapi.json`` (built with a placeholder token)."""
    from pydantic import SecretStr

    from gateway.app import create_app
    from gateway.service import GatewayService
    from worker.settings import GatewaySettings, Settings

    settings = Settings(gateway=GatewaySettings(tokens=(SecretStr("documentation"),)))
    service = GatewayService.__new__(GatewayService)  # the document needs the routes, not a broker
    return json.dumps(create_app(settings, service).openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(openapi_text(), end="")

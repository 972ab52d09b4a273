"""Remote control commands of the worker: ``celery -A worker inspect f5_health``.

Celery's ping answers while the engines fail every job. This one answers from the worker's own record (see
``worker.runtime.health``): ``{"ok": false, "reasons": [...]}`` when the last jobs all failed, or no engine process has
been ready for a while. docker-compose's health check greps for ``"ok": true``.
"""

from __future__ import annotations

from typing import Any

from celery.worker.control import inspect_command


@inspect_command()
def f5_health(state: object) -> dict[str, Any]:
    from worker.celery_app import settings
    from worker.runtime import context

    if context._context is None:  # no engine in this process to judge
        if settings.broker.role == "synthesis":  # a prefork parent: each pool child holds its own engine
            return {"ok": True, "reasons": [], "role": "synthesis",
                    "note": "prefork pool: the engines run in the pool children, out of this process's sight"}
        return {"ok": True, "reasons": [], "role": settings.broker.role}
    return context._context.health.report()

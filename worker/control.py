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
    from worker.runtime import context

    if context._context is None:  # an assembler: no engine to judge
        return {"ok": True, "reasons": [], "role": "assembler"}
    return context._context.health.report()

"""f5-batch worker package.

``celery -A worker worker`` finds the Celery app here, as ``worker.app``. Importing this package is cheap and imports
neither torch nor Celery: the producer, the gateway, Flower and benchmarks import its torch-free modules (the contract,
the speech rules, storage) or the engine alone, without the rest.

This is the one place where the app is assembled, on first access to ``worker.app``: ``worker.celery_app`` builds
it, then the lifecycle hooks (``worker.signals``), the tasks (``worker.tasks``) and the remote control commands
(``worker.control``) register themselves on it. None of them is imported by ``worker.celery_app``, so they form a
line, not a circle. (Clients that only send tasks by name may use ``worker.celery_app.app`` directly.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    import importlib

    celery_app = importlib.import_module("worker.celery_app").app
    for module in ("worker.signals", "worker.tasks", "worker.qa_tasks", "worker.control"):
        importlib.import_module(module)
    return celery_app

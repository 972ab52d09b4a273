"""f5-batch worker package.

``celery -A worker worker`` finds the Celery app here. Importing this package must stay cheap and must never import
torch or f5_tts: Flower, the producer and other clients use the same app and contract without a GPU stack. The engine
runs in processes of its own, started by the worker (see ``worker.runtime``).

This is the one place where the app is assembled: ``worker.app`` builds it, then the lifecycle hooks
(``worker.signals``), the tasks (``worker.tasks``) and the remote control commands (``worker.control``) register
themselves on it. None of them is imported by ``worker.app``, so they form a line, not a circle.
"""

from worker import control, signals, tasks  # noqa: F401 - each imports worker.app, then registers on `app`
from worker.app import app

__all__ = ["app"]

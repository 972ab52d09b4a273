"""f5-batch worker package.

``celery -A worker worker`` finds the Celery app here. Importing this package must stay cheap and must never import
torch or f5_tts: Flower, the producer and other clients use the same app and contract without a GPU stack. The engine is
imported inside the ``worker_process_init`` hook instead.
"""

from worker.app import app

__all__ = ["app"]

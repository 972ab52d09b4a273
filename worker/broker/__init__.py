"""Everything that talks to Redis below the Celery app: the hardened kombu transport, the task request class, and
the bookkeeping connection (dead letters, chapter progress, delivery counts), Sentinel included."""

"""The two kinds of failure a job can have, and how each is reported.

Bad input is the caller's fault: it fails now, is never retried, and says what was wrong and where. Anything else is
treated as transient and retried by Celery. The classes are plain exceptions with JSON-friendly ``args`` so that
Celery's JSON result backend carries them to clients in any language as ``[code, message, field]``.
"""

from __future__ import annotations

from typing import Any


class BadInputError(ValueError):
    """A job that can never succeed as written.

    ``code`` is a stable machine-readable word (``invalid_job``, ``bad_reference``, ``bad_text``, ``bad_key``, ...),
    ``message`` says what was wrong in words, ``field`` points at the offending field (dotted path) when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(code, message, field)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where}"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}


class TransientError(RuntimeError):
    """A fault outside the job (storage down, broker blip) that a retry is expected to clear."""


class SharedTimeLimitError(TransientError):
    """The job ran past its time limit while it shared passes with other jobs. On a loaded machine that says more
    about the machine than about the job: it is retried, alone, and only a job that overruns alone fails."""


class EngineLostError(TransientError):
    """The engine process holding the job stopped (a lost device, a crash, an OOM kill); a fresh one takes over."""


class _CodedError(BadInputError):
    """A :class:`BadInputError` with a fixed code. Built from a message, or (when a result backend rebuilds it from
    its ``args``) from ``(code, message, field)``."""

    code_name = ""

    def __init__(self, *args: object) -> None:
        message = args[1] if len(args) >= 2 else args[0] if args else ""
        super().__init__(self.code_name, str(message))


class JobTimeLimitError(_CodedError):
    """The job ran past its time limit and was abandoned. Retrying would only hit the limit again."""

    code_name = "time_limit"


class WorkerLostError(_CodedError):
    """The job's process died every time it ran it: it is dead-lettered instead of being run again."""

    code_name = "worker_lost"


class BatchPartialFailure(Exception):
    """Some jobs of a ``synthesize_batch`` failed for good (each is dead-lettered). The task ends FAILURE, so that an
    operator filtering Flower by "Failed" sees it; ``args`` carry the message and every job's result entry."""

    def __init__(self, message: str, items: list[dict[str, Any]]) -> None:
        super().__init__(message, items)
        self.message = message
        self.items = items

    def __str__(self) -> str:
        return self.message


class StorageUnavailableError(TransientError):
    """The storage backend could not be reached or answered with a server-side error."""


class EngineBuildError(RuntimeError):
    """The model could not be built or loaded (missing file, offline hub, mismatched checkpoint). Names the fix."""

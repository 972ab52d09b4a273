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


class StorageUnavailableError(TransientError):
    """The storage backend could not be reached or answered with a server-side error."""


class EngineBuildError(RuntimeError):
    """The model could not be built or loaded (missing file, offline hub, mismatched checkpoint). Names the fix."""

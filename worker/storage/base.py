"""The storage seam: a small protocol with an S3 and a local-folder implementation.

Keys given to a storage are relative and validated (``worker.keys``); the storage places them under its prefix.
Failures come in two kinds: :class:`ObjectNotFound` (the key does not exist: the caller decides whether that is bad
input) and :class:`~worker.errors.StorageUnavailableError` (transient: retried).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


class ObjectNotFound(KeyError):
    """No object under this key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the storage prefix
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Storage(Protocol):
    url: str

    def put(self, key: str, data: bytes | bytearray, metadata: dict[str, str] | None = None,
            content_type: str = "application/octet-stream", *, settle_later: bool = False) -> None:
        """Write atomically: readers see the old object or the new one, never a part. ``settle_later``: the object
        need only be durable, with its metadata, once this thread's next ``settle`` returns (a job's audio: its
        result goes out first, its message is acknowledged after)."""

    def settle(self) -> None:
        """Return once what this thread wrote with ``settle_later`` is durable (at once where ``put`` is)."""

    def put_file(self, key: str, path: Path, metadata: dict[str, str] | None = None,
                 content_type: str = "application/octet-stream") -> None:
        """Like ``put``, streaming from a local file (multipart on S3): for chapter-sized objects."""

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes (at most ``max_bytes + 1`` of them when given); :class:`ObjectNotFound` if absent."""

    def open(self, key: str) -> Iterator[bytes]:
        """The object's bytes as a stream of blocks, for serving large objects; :class:`ObjectNotFound` if absent."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size and metadata, or None if absent."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (metadata not filled)."""

    def delete(self, key: str) -> None:
        """Remove the object if present."""

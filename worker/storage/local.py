"""A local folder as storage: atomic writes (temp file, then rename), metadata in a hidden sidecar tree.

An object's metadata is removed before its data is replaced and written after: a crash in between leaves new data
without metadata (which the skip check treats as absent, so the job runs again), never old data under new metadata.

A full disk, a quota, an I/O error or a permission refused are faults of the machine, not of the job: they become
:class:`~worker.errors.StorageUnavailableError`, which is retried with backoff like an S3 outage (and dead-lettered as
``retries_exhausted`` only if it lasts), and which fails only the job that met it, never its batch. A name too long for
the file system is the job's own fault (``bad_key``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from worker.errors import BadInputError, StorageUnavailableError
from worker.keys import validate_key
from worker.storage.base import ObjectInfo, ObjectNotFound

META_DIR = ".f5meta"


def _unavailable(exc: OSError, action: str, key: str) -> Exception:
    """What an OS error means for the job: its own key's fault, or a fault of the disk that a retry may clear."""
    if exc.errno == errno.ENAMETOOLONG:
        return BadInputError("bad_key", f"{key[:80]!r} is too long for a file name here", "output.key")
    reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return StorageUnavailableError(f"local storage could not {action} {key[:200]!r}: {reason} "
                                   f"({exc.strerror or exc})")


def _atomic_write(path: Path, data: bytes | Path, durable: bool = True) -> None:
    """Write ``data`` (bytes, or the contents of a local file, streamed) to a temp file beside ``path``, then rename.
    ``durable``: flushed to disk before the rename (an object's data must survive a power loss once its job is
    acknowledged; its metadata need not, see ``LocalStorage._write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; stored audio is meant to be read by others
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, Path):
                with data.open("rb") as source:
                    shutil.copyfileobj(source, handle)
            else:
                handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _blocks(handle: BinaryIO, size: int = 1 << 16) -> Iterator[bytes]:
    with handle:
        while block := handle.read(size):
            yield block


class LocalStorage:
    """``file:///abs/path`` (or ``file://./relative``): every key is a file under the root folder."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root.resolve()
        self.url = url or self.root.as_uri()

    def _path(self, key: str) -> Path:
        validate_key(key, field="key")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or key.split("/", 1)[0] == META_DIR:
            raise ValueError(f"key {key!r} resolves outside the storage folder")  # a symlink, or the metadata tree
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    def _write(self, key: str, data: bytes | Path, metadata: dict[str, str] | None, content_type: str) -> None:
        path = self._path(key)
        meta = self._meta_path(key)
        try:
            meta.unlink(missing_ok=True)
            _atomic_write(path, data)
            # Not flushed: metadata lost to a power cut leaves data without metadata, which the skip check treats as
            # absent (the job runs again), never as the wrong audio. One flush per object instead of two.
            _atomic_write(meta, json.dumps({"metadata": metadata or {}, "content_type": content_type}).encode(),
                          durable=False)
        except OSError as exc:
            raise _unavailable(exc, "write", key) from exc

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None,
            content_type: str = "application/octet-stream") -> None:
        self._write(key, data, metadata, content_type)

    def put_file(self, key: str, path: Path, metadata: dict[str, str] | None = None,
                 content_type: str = "application/octet-stream") -> None:
        self._write(key, path, metadata, content_type)

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                return handle.read(-1 if max_bytes is None else max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise _unavailable(exc, "read", key) from exc

    def open(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise _unavailable(exc, "read", key) from exc
        return _blocks(handle)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            if not path.is_file():
                return None
        except OSError as exc:
            raise _unavailable(exc, "look up", key) from exc
        try:
            metadata = json.loads(self._meta_path(key).read_text())["metadata"]
        except (OSError, ValueError, KeyError):
            metadata = {}
        return ObjectInfo(key, path.stat().st_size, metadata)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d != META_DIR)
            for name in sorted(filenames):
                if name.endswith(".part"):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield ObjectInfo(key, path.stat().st_size)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

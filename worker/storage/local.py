"""A local folder as storage: atomic writes (temp file, then rename), metadata in a hidden sidecar tree.

An object's metadata is removed before its data is replaced and written after its data is on disk: a crash or a power
cut in between leaves new data without metadata (which the skip check treats as absent, so the job runs again), never
old data under new metadata, nor metadata over data that a power cut took.

``put(..., settle_later=True)`` (a job's audio): the data is in place when ``put`` returns, readable by anyone; its
flush to disk, and then its metadata, happen on a flush thread of this process once the writer calls ``settle()``
(which waits for them), or ``SETTLE_AFTER_S`` later if it never does. A job's result is sent before its audio is
flushed, and its message acknowledged only after (``worker.broker.request.ValidatedRequest.acknowledge``): the flush
(about a millisecond on a quick disk) is off the job's way to its caller. It does not even run beside that way: a sync
to disk running while the result's Redis round trip was out made that round trip a millisecond slower on the
development machine (a VM). A power cut before the acknowledgement costs a redelivery, which finds no metadata and
renders the job again. Readers in this process see the object whole at once: ``head`` waits for its metadata.

A full disk, a quota, an I/O error or a permission refused are faults of the machine, not of the job: they become
:class:`~worker.errors.StorageUnavailableError`, which is retried with backoff like an S3 outage (and dead-lettered as
``retries_exhausted`` only if it lasts), and which fails only the job that met it, never its batch. A name too long for
the file system is the job's own fault (``bad_key``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from worker.errors import BadInputError, StorageUnavailableError
from worker.keys import validate_key
from worker.storage.base import ObjectInfo, ObjectNotFound

log = logging.getLogger(__name__)

META_DIR = ".f5meta"
#: A ``settle_later`` write whose writer has not called ``settle()`` by then is flushed anyway (a writer that failed
#: before it could): its data gets to disk and its metadata, and its key is free again for this process.
SETTLE_AFTER_S = 0.1


@dataclass(eq=False)  # one per write, hashed by identity: LocalStorage keeps those not yet flushing in a set
class _Unsettled:
    """A ``settle_later`` write whose flush and metadata are still to come."""

    writing: Future[None]  # done once flushed with its metadata (or failed); the key is registered until then
    key: str
    path: Path
    inode: int  # of the file written: a file another process put there since is not this write's to flush
    sidecar: bytes
    written_at: float


def _unavailable(exc: OSError, action: str, key: str) -> Exception:
    """What an OS error means for the job: its own key's fault, or a fault of the disk that a retry may clear."""
    if exc.errno == errno.ENAMETOOLONG:
        return BadInputError("bad_key", f"{key[:80]!r} is too long for a file name here", "output.key")
    reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return StorageUnavailableError(f"local storage could not {action} {key[:200]!r}: {reason} "
                                   f"({exc.strerror or exc})")


def _atomic_write(path: Path, data: bytes | bytearray | Path, durable: bool = True) -> int:
    """Write ``data`` (bytes, or the contents of a local file, streamed) to a temp file beside ``path``, then rename.
    ``durable``: flushed to disk before the rename (an object's data must survive a power loss once its job is
    acknowledged; its metadata need not, see ``LocalStorage._write``). Returns the file's inode number."""
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except FileNotFoundError:  # the key's first object in its folder (asked only then: a job's way is short)
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
            inode = os.fstat(handle.fileno()).st_ino
        os.replace(temp, path)
        return inode
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
        self._lock = threading.Lock()
        self._settling: dict[Path, Future[None]] = {}  # per key, the work on it in progress here (see _begin)
        self._written = threading.local()  # per writing thread: what its settle() starts and waits for
        self._unsettled: set[_Unsettled] = set()  # every thread's writes whose flush has not started yet
        self._flusher: ThreadPoolExecutor | None = None
        self._late: threading.Thread | None = None

    def _path(self, key: str) -> Path:
        validate_key(key, field="key")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or key.split("/", 1)[0] == META_DIR:
            raise ValueError(f"key {key!r} resolves outside the storage folder")  # a symlink, or the metadata tree
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    def _sidecar(self, metadata: dict[str, str] | None, content_type: str) -> bytes:
        return json.dumps({"metadata": metadata or {}, "content_type": content_type}).encode()

    def _write(self, key: str, data: bytes | bytearray | Path, metadata: dict[str, str] | None,
               content_type: str) -> None:
        path = self._path(key)
        meta = self._meta_path(key)
        writing = self._begin(path)
        try:
            meta.unlink(missing_ok=True)
            _atomic_write(path, data)
            # Not flushed: metadata lost to a power cut leaves data without metadata, which the skip check treats as
            # absent (the job runs again), never as the wrong audio. One flush per object instead of two.
            _atomic_write(meta, self._sidecar(metadata, content_type), durable=False)
        except OSError as exc:
            raise _unavailable(exc, "write", key) from exc
        finally:
            self._end(path, writing)

    def put(self, key: str, data: bytes | bytearray, metadata: dict[str, str] | None = None,
            content_type: str = "application/octet-stream", *, settle_later: bool = False) -> None:
        if not settle_later:
            self._write(key, data, metadata, content_type)
            return
        path = self._path(key)
        writing = self._begin(path)
        try:
            self._meta_path(key).unlink(missing_ok=True)
            inode = _atomic_write(path, data, durable=False)
        except BaseException as exc:
            self._end(path, writing)  # never left registered: later work on the key would wait for it for ever
            if isinstance(exc, OSError):
                raise _unavailable(exc, "write", key) from exc
            raise
        unsettled = _Unsettled(writing, key, path, inode, self._sidecar(metadata, content_type), time.monotonic())
        with self._lock:
            self._unsettled.add(unsettled)
            if self._late is None:
                self._late = threading.Thread(target=self._flush_late, name="f5-flush-late", daemon=True)
                self._late.start()
        self._written.__dict__.setdefault("unsettled", []).append(unsettled)

    def settle(self) -> None:
        """Flush what this thread wrote with ``settle_later`` (with its metadata), and return once it is on disk;
        raise ``StorageUnavailableError`` if some of it could not be (its data stays, without metadata: absent to a
        skip check, so its job runs again when it comes back)."""
        written: list[_Unsettled] = self._written.__dict__.pop("unsettled", [])
        for unsettled in written:  # side by side on the flush threads (a batch's jobs)
            self._start_flush(unsettled)
        failures = [exc for exc in (u.writing.exception() for u in written) if exc is not None]
        if failures:
            raise failures[0]

    def _start_flush(self, unsettled: _Unsettled) -> None:
        with self._lock:
            if unsettled not in self._unsettled:
                return  # started already (by its writer's settle, or late)
            self._unsettled.remove(unsettled)
        try:
            self._flushing().submit(self._settle_one, unsettled)
        except BaseException:  # no new work taken (the interpreter is shutting down): flushed here, never left
            self._settle_one(unsettled)

    def _flush_late(self) -> None:
        """Flushes the writes nobody settled within ``SETTLE_AFTER_S``; looks every ``SETTLE_AFTER_S / 2`` (a look
        with nothing late costs a few microseconds; waking it at each write instead would add a thread's wake-up to
        every job's way)."""
        while True:
            time.sleep(SETTLE_AFTER_S / 2)
            due_before = time.monotonic() - SETTLE_AFTER_S
            with self._lock:
                late = [u for u in self._unsettled if u.written_at <= due_before]
            for unsettled in late:
                try:
                    self._start_flush(unsettled)
                except Exception:  # never the end of this thread: the next write's flush would never come
                    log.exception("flushing %s late failed", unsettled.key)

    def _settle_one(self, unsettled: _Unsettled) -> None:
        writing, path = unsettled.writing, unsettled.path
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_ino == unsettled.inode:  # else another process wrote the key since: its own metadata
                    os.fsync(fd)
                    _atomic_write(self._meta_path(unsettled.key), unsettled.sidecar, durable=False)
            finally:
                os.close(fd)
        except OSError as exc:
            writing.set_exception(_unavailable(exc, "flush", unsettled.key))
        except BaseException as exc:
            writing.set_exception(exc)
        else:
            writing.set_result(None)
        finally:
            self._end(path, writing)

    def _flushing(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="f5-flush")
            return self._flusher

    def _begin(self, path: Path) -> Future[None]:
        """This process's work on ``path`` (a write, a read of its metadata, a delete) starts once any earlier one has
        finished (a write's data, flush and metadata): the metadata of one write never lands on the data of another,
        and a reader here never sees a write half done."""
        writing: Future[None] = Future()
        while True:
            with self._lock:
                earlier = self._settling.get(path)
                if earlier is None:
                    self._settling[path] = writing
                    return writing
            earlier.exception()

    def _end(self, path: Path, writing: Future[None]) -> None:
        with self._lock:
            if self._settling.get(path) is writing:
                del self._settling[path]
        if not writing.done():
            writing.set_result(None)

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
        reading = self._begin(path)  # not in the middle of this process's write of the key: its data and metadata
        try:
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
        finally:
            self._end(path, reading)

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
        path = self._path(key)
        deleting = self._begin(path)
        try:
            path.unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
        finally:
            self._end(path, deleting)

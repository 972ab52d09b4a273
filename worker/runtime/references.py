"""Reference clips by key: from an allowed local voices folder, else from storage. Never from a URL.

A clip's size is checked before it is read (a HEAD, or a stat), and the read itself stops past the limit, so a planted
multi-gigabyte "voice" costs nothing. Fetched clips are cached per process for a few minutes, so a book narrated in
one voice fetches its clip once per worker, while a re-uploaded voice is picked up soon after.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from cachetools import TTLCache

from worker.errors import BadInputError
from worker.keys import validate_key
from worker.storage import ObjectNotFound, Storage

_FIELD = "voice.ref_audio"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # 60 s of 96 kHz stereo 24-bit WAV is 35 MB


@dataclass(frozen=True)
class Reference:
    """A clip's bytes and their SHA-256: the digest is what the audio's identity and the engine's voice cache follow."""

    data: bytes
    sha256: str


class ReferenceStore:
    def __init__(self, storage: Storage, voices_dir: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 ttl_s: float = 300.0, size: int = 64) -> None:
        self.storage = storage
        self.voices_dir = Path(voices_dir).resolve() if voices_dir else None
        self.max_bytes = max_bytes
        self._cache: TTLCache[str, Reference] = TTLCache(maxsize=size, ttl=ttl_s)
        self._lock = threading.Lock()  # task threads share the cache

    def _too_big(self, key: str, size: int) -> BadInputError:
        return BadInputError("bad_reference", f"the reference {key!r} is {size / 2**20:.1f} MB; at most "
                             f"{self.max_bytes / 2**20:.0f} MB is read (F5_MAX_REFERENCE_BYTES)", _FIELD)

    def _local(self, key: str) -> bytes | None:
        if self.voices_dir is None:
            return None
        path = (self.voices_dir / key).resolve()
        if not path.is_relative_to(self.voices_dir):
            raise BadInputError("bad_key", f"{key!r} resolves outside the voices folder", _FIELD)
        if not path.is_file():
            return None
        if path.stat().st_size > self.max_bytes:
            raise self._too_big(key, path.stat().st_size)
        return path.read_bytes()

    def _stored(self, key: str) -> bytes:
        info = self.storage.head(key)
        if info is None:
            where = f"{self.storage.url}" + (f" or {self.voices_dir}" if self.voices_dir else "")
            raise BadInputError("unknown_voice", f"no reference audio at {key!r} in {where} "
                                "(upload it with `f5-batch voice add`)", _FIELD)
        if info.size > self.max_bytes:
            raise self._too_big(key, info.size)
        try:
            data = self.storage.get(key, max_bytes=self.max_bytes)
        except ObjectNotFound:
            raise BadInputError("unknown_voice", f"no reference audio at {key!r}", _FIELD) from None
        if len(data) > self.max_bytes:  # replaced by a bigger object between the HEAD and the GET
            raise self._too_big(key, len(data))
        return data

    def get(self, key: str, expected_sha256: str | None = None) -> Reference:
        """The clip under ``key``. With ``expected_sha256`` (the digest the sender saw), a cached copy that differs
        is read again, and a clip that still differs is refused: the voice was replaced after the job was made."""
        validate_key(key, field=_FIELD)
        with self._lock:
            cached: Reference | None = self._cache.get(key)
        if cached is not None and expected_sha256 in (None, cached.sha256):
            return cached
        data = self._local(key)
        if data is None:
            data = self._stored(key)
        reference = Reference(data, hashlib.sha256(data).hexdigest())
        with self._lock:
            self._cache[key] = reference
        if expected_sha256 is not None and reference.sha256 != expected_sha256:
            raise BadInputError("voice_changed", f"the clip at {key!r} is not the one this job was made for (its "
                                f"SHA-256 is {reference.sha256[:12]}…, the job expects {expected_sha256[:12]}…): the "
                                "voice was replaced; enqueue the book again to render it in the new voice", _FIELD)
        return reference

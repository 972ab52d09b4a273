"""Reference clips by key: from an allowed local voices folder, else from storage. Never from a URL.

Fetched clips are cached per process for a few minutes, so a book narrated in one voice fetches its clip once per
worker process, while a re-uploaded voice is picked up soon after.
"""

from __future__ import annotations

from pathlib import Path

from cachetools import TTLCache

from worker.errors import BadInputError
from worker.keys import validate_key
from worker.storage import ObjectNotFound, Storage

_FIELD = "voice.ref_audio"


class VoiceStore:
    def __init__(self, storage: Storage, voices_dir: str | None = None, ttl_s: float = 300.0, size: int = 64) -> None:
        self.storage = storage
        self.voices_dir = Path(voices_dir).resolve() if voices_dir else None
        self._cache: TTLCache = TTLCache(maxsize=size, ttl=ttl_s)

    def _local(self, key: str) -> bytes | None:
        if self.voices_dir is None:
            return None
        path = (self.voices_dir / key).resolve()
        if not path.is_relative_to(self.voices_dir):
            raise BadInputError("bad_key", f"{key!r} resolves outside the voices folder", _FIELD)
        return path.read_bytes() if path.is_file() else None

    def get(self, key: str) -> bytes:
        validate_key(key, field=_FIELD)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = self._local(key)
        if data is None:
            try:
                data = self.storage.get(key)
            except ObjectNotFound:
                where = f"{self.storage.url}" + (f" or {self.voices_dir}" if self.voices_dir else "")
                raise BadInputError("unknown_voice", f"no reference audio at {key!r} in {where} "
                                    "(upload it with `f5-batch voice add`)", _FIELD) from None
        self._cache[key] = data
        return data

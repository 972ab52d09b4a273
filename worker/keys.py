"""Object keys: what a key may look like, and how one is derived from content.

Every key (outputs and voices alike) is relative to the configured storage prefix. A key that could climb out of that
prefix, or that different layers could read differently (backslashes, percent-escapes, control characters), is refused
before any storage call is made.
"""

from __future__ import annotations

import re
import unicodedata

from worker.constants import VOICES_PREFIX
from worker.errors import BadInputError

MAX_KEY_BYTES = 1024  # S3's limit on a whole key (prefix included), in UTF-8 bytes
_FORBIDDEN_CHARS = {"\\": "a backslash", "%": "a percent sign (percent-escapes are not decoded)"}
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def validate_key(key: object, field: str = "output.key") -> str:
    """Return ``key`` unchanged if it is a safe relative key, or raise :class:`BadInputError` saying why not."""
    if not isinstance(key, str):
        raise BadInputError("bad_key", f"a key must be a string, got {type(key).__name__}", field)
    if not key:
        raise BadInputError("bad_key", "a key must not be empty", field)
    size = len(key.encode("utf-8", errors="surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise BadInputError("bad_key", f"a key has at most {MAX_KEY_BYTES} bytes of UTF-8, this one has {size}", field)
    if _URL_RE.match(key):
        raise BadInputError("bad_key", f"{key[:80]!r} is a URL; give a key relative to the storage prefix", field)
    if key.startswith("/"):
        raise BadInputError("bad_key", f"{key[:80]!r} is absolute; keys are relative to the storage prefix", field)
    for char, name in _FORBIDDEN_CHARS.items():
        if char in key:
            raise BadInputError("bad_key", f"{key[:80]!r} contains {name}", field)
    for char in key:
        if unicodedata.category(char)[0] == "C":
            raise BadInputError("bad_key", f"{key[:80]!r} contains the control character U+{ord(char):04X}", field)
    for part in key.split("/"):
        if part in ("", ".", ".."):
            shown = part or "an empty segment"
            raise BadInputError("bad_key", f"{key[:80]!r} has {shown!s} as a path segment", field)
    return key


def join_prefix(prefix: str, key: str) -> str:
    """Place a validated key under a storage prefix (which may be empty); the whole must fit S3's key limit."""
    validate_key(key)
    prefix = prefix.strip("/")
    full = f"{prefix}/{key}" if prefix else key
    size = len(full.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise BadInputError("bad_key", f"{key[:80]!r} under the prefix {prefix!r} makes a key of {size} bytes; S3 "
                            f"takes at most {MAX_KEY_BYTES}", "output.key")
    return full


def refuse_reserved(key: str, field: str = "output.key") -> str:
    """Reference clips live under ``voices/``: a job's output may not land there (and overwrite a narrator)."""
    if key.startswith(VOICES_PREFIX):
        raise BadInputError("bad_key", f"{key[:80]!r} is under {VOICES_PREFIX}, which holds reference clips; "
                            "write outputs elsewhere", field)
    return key


def derived_output_key(content_hash: str) -> str:
    """The key of a job that names none: stable for the same content, so a redelivery overwrites, never forks."""
    return f"jobs/{content_hash[:2]}/{content_hash}.wav"

"""Object keys: what a key may look like, and how one is derived from content.

Every key (outputs and voices alike) is relative to the configured storage prefix. A key that could climb out of that
prefix, or that different layers could read differently (backslashes, percent-escapes, control characters), is refused
before any storage call is made.
"""

from __future__ import annotations

import re
import unicodedata

from worker.errors import BadInputError

MAX_KEY_LENGTH = 512
_FORBIDDEN_CHARS = {"\\": "a backslash", "%": "a percent sign (percent-escapes are not decoded)"}
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def validate_key(key: object, field: str = "output.key") -> str:
    """Return ``key`` unchanged if it is a safe relative key, or raise :class:`BadInputError` saying why not."""
    if not isinstance(key, str):
        raise BadInputError("bad_key", f"a key must be a string, got {type(key).__name__}", field)
    if not key:
        raise BadInputError("bad_key", "a key must not be empty", field)
    if len(key) > MAX_KEY_LENGTH:
        raise BadInputError("bad_key", f"a key has at most {MAX_KEY_LENGTH} characters, this one has {len(key)}", field)
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
    """Place a validated key under a storage prefix (which may be empty)."""
    validate_key(key)
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


def derived_output_key(content_hash: str) -> str:
    """The key of a job that names none: stable for the same content, so a redelivery overwrites, never forks."""
    return f"jobs/{content_hash[:2]}/{content_hash}.wav"

"""Bearer-token authentication: tokens from the environment (``F5_GATEWAY_TOKENS``), compared in constant time.

The gateway refuses to start without a token unless it is explicitly told to run open (``F5_GATEWAY_OPEN=true``):
an open gateway can spend anyone's GPUs and read any job's audio.

The review page adds a session cookie, because a browser cannot put a bearer header on ``<audio src>``: a login
trades a token for a signed, expiring cookie that never holds the token itself (:class:`SessionCookies`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials


class GatewayClosed(RuntimeError):
    """The gateway has no token and was not told to run open."""


def check_configuration(tokens: tuple[str, ...], open_: bool) -> None:
    if not tokens and not open_:
        raise GatewayClosed("no token configured: set F5_GATEWAY_TOKENS (comma-separated), or F5_GATEWAY_OPEN=true "
                            "to serve without authentication")


class BearerAuth:
    """The request must carry one of the tokens (unless the gateway runs open)."""

    def __init__(self, tokens: tuple[str, ...], open_: bool) -> None:
        self.tokens = tuple(token.encode() for token in tokens)
        self.open = open_

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> int:
        """The index of the token the request carries (-1 for an open gateway), or a 401."""
        if self.open and not self.tokens:
            return -1
        given = credentials.credentials.encode() if credentials else b""
        matched = -1
        for index, token in enumerate(self.tokens):  # every token is compared: the time does not tell which was close
            if hmac.compare_digest(given, token):
                matched = index
        if matched < 0:
            raise HTTPException(401, {"code": "unauthorized", "message": "a valid bearer token is required",
                                      "field": None}, headers={"WWW-Authenticate": "Bearer"})
        return matched


class RateLimit:
    """A token bucket per bearer token: ``rate`` requests a second on average, ``burst`` at once. One client cannot
    take the gateway (and the GPUs behind it) from the others. Per gateway process; 0 turns it off."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token -> (tokens left, when)
        self._lock = threading.Lock()

    def take(self, token: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            left, then = self._buckets.get(token, (float(self.burst), now))
            left = min(float(self.burst), left + (now - then) * self.rate)
            if left < 1.0:
                self._buckets[token] = (left, now)
                wait = max(1, round((1.0 - left) / self.rate + 0.5))
                raise HTTPException(429, {"code": "rate_limited", "field": None, "message": (
                    f"this token is over {self.rate:g} requests a second (burst {self.burst}); retry in {wait} s")},
                    headers={"Retry-After": str(wait)})
            self._buckets[token] = (left - 1.0, now)


SESSION_COOKIE = "f5_review"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600


class SessionCookies:
    """Review sessions: ``INDEX.EXPIRES.MAC``, where the MAC is keyed by a key derived from token ``INDEX``.

    Stateless, so any gateway process with the same tokens accepts it; a session ends when it expires or when its
    token leaves (or moves within) ``F5_GATEWAY_TOKENS``. The cookie authenticates as that token, rate bucket
    included. POSTs made with it must also carry :meth:`csrf` of it in ``X-CSRF-Token``: a header no other site can
    set, with a value no other site can read (SameSite=Strict is the first line, this the second).
    """

    def __init__(self, tokens: tuple[str, ...], ttl_s: int = SESSION_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = tuple(hmac.new(token.encode(), b"f5-batch review session", hashlib.sha256).digest()
                          for token in tokens)
        self.open_key = secrets.token_bytes(32)  # an open gateway has no token: its CSRF tokens use this one
        self.ttl_s, self.clock = ttl_s, clock

    def _mac(self, index: int, body: str) -> str:
        key = self.keys[index] if index >= 0 else self.open_key
        return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()

    def issue(self, index: int) -> str:
        body = f"{index}.{int(self.clock()) + self.ttl_s}"
        return f"{body}.{self._mac(index, body)}"

    def verify(self, value: str | None) -> int | None:
        """The token index a cookie stands for, or None (absent, forged, expired, or its token is gone)."""
        parts = (value or "").split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        index, expires = int(parts[0]), int(parts[1])
        if index >= len(self.keys) or expires < self.clock():
            return None
        return index if hmac.compare_digest(parts[2], self._mac(index, f"{index}.{expires}")) else None

    def csrf(self, index: int, session: str) -> str:
        """The CSRF token of a session (``session`` is "" on an open gateway, which has no cookie)."""
        return self._mac(index, f"csrf:{session}")

    def check_csrf(self, index: int, session: str, given: str | None) -> None:
        if not given or not hmac.compare_digest(given, self.csrf(index, session)):
            raise HTTPException(403, {"code": "csrf", "field": None, "message": (
                f"a request made with the review cookie needs the page's {CSRF_HEADER} header")})

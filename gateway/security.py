"""Bearer-token authentication: tokens from the environment (``F5_GATEWAY_TOKENS``), compared in constant time.

The gateway refuses to start without a token unless it is explicitly told to run open (``F5_GATEWAY_OPEN=true``):
an open gateway can spend anyone's GPUs and read any job's audio.
"""

from __future__ import annotations

import hmac
import threading
import time

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

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
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

"""Bearer-token authentication: tokens from the environment (``F5_GATEWAY_TOKENS``), compared in constant time.

The gateway refuses to start without a token unless it is explicitly told to run open (``F5_GATEWAY_OPEN=true``):
an open gateway can spend anyone's GPUs and read any job's audio.
"""

from __future__ import annotations

import hmac

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

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if self.open and not self.tokens:
            return
        given = credentials.credentials.encode() if credentials else b""
        matched = False
        for token in self.tokens:  # every token is compared, so the time does not tell which one was close
            matched |= hmac.compare_digest(given, token)
        if not matched:
            raise HTTPException(401, {"code": "unauthorized", "message": "a valid bearer token is required",
                                      "field": None}, headers={"WWW-Authenticate": "Bearer"})

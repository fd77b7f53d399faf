"""Bearer tokens for the API: TAPEDECK_API_TOKEN writes and reads, TAPEDECK_READ_TOKEN only reads.

With neither set (development), the API is open; production refuses to start without the first.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request

from service.core.signing import is_token_valid
from service.errors import Forbidden, Unauthorized
from service.settings import Settings


def authorize(request: Request, settings: Settings, need: Literal["read", "write"]) -> None:
    """Raises Unauthorized (no or unknown token) or Forbidden (a read token on a write)."""
    write, read = settings.api_token, settings.read_token
    if not write and not read:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send Authorization: Bearer <TAPEDECK_API_TOKEN>")
    if write and is_token_valid(token, str(write)):
        return
    if read and is_token_valid(token, str(read)):
        if need == "read":
            return
        raise Forbidden("this token is read-only (TAPEDECK_READ_TOKEN); writes need TAPEDECK_API_TOKEN")
    raise Unauthorized("the bearer token is not one of Tapedeck's tokens")

"""Who may do what: TAPEDECK_API_TOKEN writes and reads, TAPEDECK_READ_TOKEN only reads.

The API takes `Authorization: Bearer <token>`. The dashboard signs in once with a token and then
holds a session cookie (HttpOnly, SameSite=Strict, signed with a key derived from the tokens, so
changing a token ends every session); a write through a session also needs the page's CSRF token
in `X-CSRF-Token`. A token never travels in a URL. With neither token set (development), all is
open; production refuses to start without the first.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final, Literal

from starlette.requests import Request

from service.core.signing import is_token_valid
from service.errors import Forbidden, Unauthorized
from service.settings import Settings

Role = Literal["read", "write"]
SESSION_COOKIE: Final = "tapedeck_session"
CSRF_HEADER: Final = "x-csrf-token"
SESSION_S: Final = 12 * 3600


def is_open(settings: Settings) -> bool:
    return not settings.api_token and not settings.read_token


def role_of_token(settings: Settings, token: str) -> Role | None:
    if settings.api_token and is_token_valid(token, str(settings.api_token)):
        return "write"
    if settings.read_token and is_token_valid(token, str(settings.read_token)):
        return "read"
    return None


def _key(settings: Settings) -> bytes:
    material = f"tapedeck-session\x00{settings.api_token or ''}\x00{settings.read_token or ''}"
    return hashlib.sha256(material.encode()).digest()


def _sign(settings: Settings, text: str, purpose: str = "session") -> str:
    key = hmac.new(_key(settings), purpose.encode(), hashlib.sha256).digest()  # one key per use
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def new_session(settings: Settings, role: Role, now_s: float | None = None) -> str:
    """A cookie value: the role, until when, and their signature."""
    until = int((now_s if now_s is not None else time.time()) + SESSION_S)
    body = f"{role}.{until}"
    return f"{body}.{_sign(settings, body)}"


def session_role(settings: Settings, value: str | None, now_s: float | None = None) -> Role | None:
    if not value:
        return None
    role, _, rest = value.partition(".")
    until, _, signature = rest.partition(".")
    if role not in ("read", "write") or not (until.isascii() and until.isdigit()):
        return None
    if not _same(signature, _sign(settings, f"{role}.{until}")):
        return None
    if int(until) < (now_s if now_s is not None else time.time()):
        return None
    # Without an API token the key is made of the read token alone, which its holder knows: such
    # a session can only ever read.
    if role == "write" and settings.api_token:
        return "write"
    return "read"


def _same(given: str, expected: str) -> bool:
    """Constant time, and any text (a header with odd bytes is a mismatch, never an error)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def csrf_token(settings: Settings, session: str) -> str:
    """What a page holding `session` sends back with each write (the cookie alone is not enough)."""
    return _sign(settings, session, purpose="csrf")


def page_role(request: Request, settings: Settings) -> Role | None:
    """The dashboard's visitor: write when open, else the session's role (None: sign in first)."""
    if is_open(settings):
        return "write"
    return session_role(settings, request.cookies.get(SESSION_COOKIE))


def authorize(request: Request, settings: Settings, need: Role) -> None:
    """Raises Unauthorized (no or unknown token or session) or Forbidden (a read token or
    session on a write; a session's write without its CSRF token)."""
    if is_open(settings):
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme or token:
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send Authorization: Bearer <TAPEDECK_API_TOKEN>")
        role = role_of_token(settings, token)
        if role is None:
            raise Unauthorized("the bearer token is not one of Tapedeck's tokens")
        if need == "write" and role == "read":
            raise Forbidden("this token is read-only (TAPEDECK_READ_TOKEN); writes need TAPEDECK_API_TOKEN")
        return
    session = request.cookies.get(SESSION_COOKIE)
    role = session_role(settings, session)
    if role is None or session is None:
        raise Unauthorized("send Authorization: Bearer <TAPEDECK_API_TOKEN>, or sign in at /login")
    if need == "write":
        if role == "read":
            raise Forbidden("signed in with the read token: actions need TAPEDECK_API_TOKEN")
        sent = request.headers.get(CSRF_HEADER, "")
        if not _same(sent, csrf_token(settings, session)):
            raise Forbidden("a write from the dashboard needs its X-CSRF-Token: reload the page")

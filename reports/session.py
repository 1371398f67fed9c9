"""Browser sessions for the console: a login form takes an API token and sets a cookie.

The cookie holds a random session id, never the token; the server keeps id -> token in
memory and authenticates the token again on every request, so revoking a token ends its
sessions at once. Sessions end after `SESSION_SECONDS` or at logout, and do not survive a
restart (logging in again is cheap).

CSRF: double-submit. Every page sets a random `fdns_csrf` cookie (HttpOnly, SameSite=Strict)
and puts the same value in its forms (`csrf` field) and in `<meta name="csrf">` for the few
scripts (`X-CSRF-Token` header). A request authenticated by the session cookie that changes
something must carry the value; another site can neither read the cookie nor set it.
Bearer-token requests carry no ambient credential, so they need no CSRF value.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict

SESSION_COOKIE = "fdns_session"
CSRF_COOKIE = "fdns_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
"""Oldest sessions are forgotten past this: a flood of logins cannot exhaust memory."""

COOKIE_FLAGS = {"httponly": True, "samesite": "Strict", "path": "/"}


class Sessions:
    """Session id -> (token, expiry), in memory, bounded."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self.lifetime = lifetime
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def create(self, token: str) -> str:
        """A new session for `token`; its id (the cookie's value)."""
        sid = secrets.token_urlsafe(32)
        self._items[sid] = (token, time.monotonic() + self.lifetime)
        while len(self._items) > MAX_SESSIONS:
            self._items.popitem(last=False)
        return sid

    def token(self, sid: str | None) -> str | None:
        """The token behind a live session, or None."""
        if not sid:
            return None
        item = self._items.get(sid)
        if item is None:
            return None
        if item[1] < time.monotonic():
            del self._items[sid]
            return None
        return item[0]

    def drop(self, sid: str | None) -> None:
        if sid:
            self._items.pop(sid, None)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(cookie: str | None, sent: str | None) -> bool:
    """True when the value sent with a request is the cookie's (compared in constant time)."""
    if not cookie or not sent:
        return False
    return hmac.compare_digest(cookie.encode(), sent.encode())

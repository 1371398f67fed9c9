"""API tokens: random, shown once, stored only as a SHA-256 digest.

A token is 32 random bytes, URL-safe base64, prefixed `fdns_` so a leaked one is easy to
spot in logs and by secret scanners. 256 bits of entropy make a salted, slow hash
unnecessary: nobody can guess one, so a plain SHA-256 is enough to make a stolen database
useless for logging in.
"""

from __future__ import annotations

import hashlib
import secrets

from reports.vocabulary import ROLES

PREFIX = "fdns_"

# Which roles may do what: each may do everything the roles before it may.
_RANK = {"viewer": 1, "reviewer": 2, "admin": 3}


def new_token() -> str:
    """A fresh random token (give it to its holder once; store `hash_token(token)`)."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The digest stored for a token (hex SHA-256 of its UTF-8 text)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    """True when a token of `role` may use an endpoint that needs `needed`."""
    if needed not in _RANK:
        raise ValueError(f"unknown role {needed!r}; one of {', '.join(ROLES)}")
    return _RANK.get(role, 0) >= _RANK[needed]

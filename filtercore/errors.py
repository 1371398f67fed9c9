"""Exceptions raised by filtercore. Each says what went wrong and where."""

from __future__ import annotations


class FilterError(Exception):
    """Base class of every error filtercore raises on purpose."""


class InvalidNameError(FilterError, ValueError):
    """A host name that cannot be normalised (empty label, bad IDNA, too long, ...)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class InvalidURLError(FilterError, ValueError):
    """A URL that cannot be parsed or canonicalised."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"invalid URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


class ListFormatError(FilterError):
    """A whole list cannot be read: missing, unreadable, binary, or of an unknown format.

    Single malformed lines are not errors: they are collected as `Problem` records while
    the rest of the list loads.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

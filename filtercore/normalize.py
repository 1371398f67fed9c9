"""Name normalisation, the first step of every verdict (DESIGN.md, verdict semantics).

Lower case, surrounding white space and one trailing dot removed, IDNA (UTS #46) mapped to
A-labels. Names are checked against DNS limits (63-byte labels, 253-byte names) and a
conservative character set (letters, digits, hyphen, underscore; `*` only where a caller
allows wildcards). Pure ASCII names, the common case, never reach the `idna` package.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from filtercore.errors import InvalidNameError

_ASCII_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_MAX_NAME = 253
_MAX_LABEL = 63


def normalize_name(name: str) -> str:
    """Return the normalised form of a host name, or raise `InvalidNameError`.

    >>> normalize_name(" WWW.Example.COM. ")
    'www.example.com'
    >>> normalize_name("Bücher.example")
    'xn--bcher-kva.example'
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise InvalidNameError(name, "empty name")
    if text.isascii():
        text = text.lower()
        if not _ASCII_NAME.fullmatch(text):
            if ".." in text or text.startswith("."):
                raise InvalidNameError(name, "empty label")
            raise InvalidNameError(name, "character not allowed in a host name")
        if "xn--" in text:
            _check_a_labels(name, text)
    else:
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidNameError(name, f"IDNA: {exc}") from None
        except UnicodeError as exc:
            raise InvalidNameError(name, f"IDNA: {exc}") from None
    if len(text) > _MAX_NAME:
        raise InvalidNameError(name, f"longer than {_MAX_NAME} bytes")
    for label in text.split("."):
        if len(label) > _MAX_LABEL:
            raise InvalidNameError(name, f"label {label[:20]!r}... longer than {_MAX_LABEL} bytes")
    return text


def _check_a_labels(original: str, text: str) -> None:
    """Reject `xn--` labels that are not valid Punycode, so they cannot shadow real names."""
    for label in text.split("."):
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as exc:
                raise InvalidNameError(original, f"bad A-label {label!r}: {exc}") from None


def normalize_ip(text: str) -> str | None:
    """Return the canonical text of an IPv4/IPv6 literal, or None if `text` is not one.

    Brackets around IPv6 (`[::1]`) are accepted, as in URLs.
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    if not candidate or not (candidate[0].isdigit() or ":" in candidate):
        return None
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None

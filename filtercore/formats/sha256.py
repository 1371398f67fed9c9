"""Confidential lists: one SHA-256 digest (64 hex digits) a line, `#` comments.

`sha256-domains` digests are of normalised names (Kind.SHA256_DOMAIN); `sha256-urls`
digests are of Safe Browsing URL expressions (Kind.SHA256_URL). Upper-case hex is accepted
and stored in lower case, so one spelling matches. Anything else on a line is reported:
the plain text is never guessed at, since these lists must not hold names in clear.
"""

from __future__ import annotations

from filtercore.entries import Entry, Kind, ParsedList, Problem
from filtercore.formats._common import content_lines, cut_comment

_HEX = frozenset("0123456789abcdef")
DIGEST_LENGTH = 64


def parse_domains_text(
    text: str, source: str, out: ParsedList, category: str | None = None
) -> None:
    """Parse a list of SHA-256 digests of normalised names (format `sha256-domains`)."""
    _parse(text, source, out, category, Kind.SHA256_DOMAIN)


def parse_urls_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse a list of SHA-256 digests of URL expressions (format `sha256-urls`)."""
    _parse(text, source, out, category, Kind.SHA256_URL)


def _parse(text: str, source: str, out: ParsedList, category: str | None, kind: Kind) -> None:
    """Append one entry of `kind` per valid digest line, a problem per other line."""
    for number, raw in content_lines(text, source, out):
        digest = cut_comment(raw).lower()
        if len(digest) != DIGEST_LENGTH:
            reason = f"not a SHA-256 digest ({len(digest)} characters, expected 64 hex digits)"
        elif not _HEX.issuperset(digest):
            reason = "not a SHA-256 digest (non-hex character)"
        else:
            out.entries.append(Entry(kind, digest, number, source, category=category))
            continue
        out.problems.append(Problem(source, number, raw, reason))

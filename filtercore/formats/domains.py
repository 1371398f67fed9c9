"""Plain domain lists: one host name a line (UT1 `domains` files are this format).

Accepted on a line, after `#` comments (whole-line or inline) are dropped:

- `example.com`: the name and everything below it (Scope.SUBTREE);
- `*.example.com`: only the names below it (Scope.BELOW);
- `.example.com`: squid's dstdomain spelling of `example.com`;
- IPv4/IPv6 literals: Kind.IP entries;
- upper case and IDN (U-labels) are normalised like queries are.

Reported (never raised): several fields on one line, invalid names (empty label, label over
63 bytes, name over 253 bytes, characters a host name cannot hold, bad Punycode), lines that
are not valid UTF-8.

Speed: lists of a million names are the common case, so clean lines never go through
`normalize_name`. The whole text is lower-cased once, a handful of whole-text scans (one
character-class regex and two `str.find` loops) flag the few lines that need care, and the
loop over the rest only checks length and the first and last characters before building
the entry.
"""

from __future__ import annotations

import re

from filtercore.entries import Entry, Kind, ParsedList, Problem, Scope
from filtercore.errors import InvalidNameError
from filtercore.formats._common import BAD_UTF8, NOT_UTF8, cut_comment, parse_host, split_lines

# Anything outside this class (white space, `#`, `*`, non-ASCII, ...) needs the careful path.
_UNUSUAL_CHAR = re.compile(r"[^a-z0-9_.\n-]")
# Substrings that make an otherwise clean-looking line invalid (empty label) or special
# (A-labels are checked by the idna package).
_UNUSUAL_TEXT = ("..", "xn--")
# A name ending in a digit may be an IPv4 address; a leading or trailing dot is an empty
# label or a trailing root. The loop checks these per line: cheaper than whole-text scans
# for `\n.`, whose first character is everywhere.
_CAREFUL_LAST = frozenset("0123456789.")
_MAX_FAST_LENGTH = 63  # a name this short cannot hold a label over 63 bytes


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse the text of a plain domain list, appending to `out.entries` and `out.problems`.

    Args:
        text: the whole file, decoded.
        source: the file name to record in entries and problems.
        out: where entries and problems go.
        category: the source category to record in every entry (UT1 folder name), or None.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    low = text.lower()
    lines = split_lines(low)
    careful = _lines_needing_care(low)
    originals = lines if low == text else None

    # tuple.__new__ builds the NamedTuple without running the Python-level __new__ that
    # Entry(...) does: 0.19 instead of 0.5 us an entry, measured at a million entries.
    new = tuple.__new__
    append = out.entries.append
    domain = Kind.DOMAIN
    subtree = Scope.SUBTREE
    careful_last = _CAREFUL_LAST
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        if (
            number in careful
            or len(line) > _MAX_FAST_LENGTH
            or line[-1] in careful_last
            or line[0] == "."
        ):
            if originals is None:
                originals = split_lines(text)
            _parse_careful(originals[number - 1], number, source, out, category)
            continue
        append(new(Entry, (domain, line, number, source, None, subtree, "word", category, False)))


def _lines_needing_care(low: str) -> set[int]:
    """Line numbers (1-based) of lines that the fast path must not take as they are."""
    offsets = [match.start() for match in _UNUSUAL_CHAR.finditer(low)]
    for needle in _UNUSUAL_TEXT:
        at = low.find(needle)
        while at >= 0:
            offsets.append(at)
            at = low.find(needle, at + 1)
    lines: set[int] = set()
    number, last = 1, 0
    for offset in sorted(offsets):
        number += low.count("\n", last, offset)
        last = offset
        lines.add(number)
    return lines


def _parse_careful(raw: str, number: int, source: str, out: ParsedList, category: str | None):
    """The slow path for one line: comments, white space, wildcards, IPs, IDN, errors."""
    line = cut_comment(raw)
    if not line:
        return
    if BAD_UTF8 in line:
        out.problems.append(Problem(source, number, raw, NOT_UTF8))
        return
    if len(line.split()) > 1:
        out.problems.append(
            Problem(source, number, raw, "more than one field (a hosts file? use format hosts)")
        )
        return
    try:
        kind, value, scope = parse_host(line)
    except InvalidNameError as exc:
        out.problems.append(Problem(source, number, raw, exc.reason))
        return
    out.entries.append(Entry(kind, value, number, source, scope=scope, category=category))

"""List format parsers: one module per format, `parse_list` to dispatch, `sniff_format` to guess.

Every parser produces a `ParsedList` (filtercore.entries): entries to compile and the lines
it could not use, each with its source and line number. A malformed line never raises; a
file that cannot be read at all (missing, unreadable, binary, unknown format) raises
`ListFormatError`.

Typical use: `parse_list("lists/default/ut1/doh/domains")` sniffs `domains` from the file
name and returns about 3,000 entries; `parse_list(path, "hosts")` forces a format.
"""

from __future__ import annotations

from pathlib import Path

from filtercore.entries import ParsedList
from filtercore.errors import ListFormatError
from filtercore.formats import (
    adblock,
    dnsmasq,
    domains,
    expressions,
    hosts,
    keywords,
    rpz,
    sha256,
    urls,
    ut1,
)
from filtercore.formats._common import (
    TextParser,
    decode,
    gc_paused,
    read_head,
    read_text,
    split_lines,
)
from filtercore.normalize import normalize_ip

_TEXT_PARSERS: dict[str, TextParser] = {
    "domains": domains.parse_text,
    "hosts": hosts.parse_text,
    "adblock": adblock.parse_text,
    "dnsmasq": dnsmasq.parse_text,
    "rpz": rpz.parse_text,
    "sha256-domains": sha256.parse_domains_text,
    "sha256-urls": sha256.parse_urls_text,
    "keywords": keywords.parse_text,
    "expressions": expressions.parse_text,
    "urls": urls.parse_text,
}

FORMATS: tuple[str, ...] = (*_TEXT_PARSERS, "ut1")
"""Every format name `parse_list` accepts (besides "auto")."""

# Files whose name alone says their format (UT1 trees, and keyword lists by convention).
_NAMED_FILES = {
    "domains": "domains",
    "urls": "urls",
    "expressions": "expressions",
    "very_restrictive_expression": "expressions",
    "keywords": "keywords",
    "usage": "ut1",
}
_SNIFF_BYTES = 256 * 1024
_SNIFF_LINES = 200
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_list(path: str, fmt: str = "auto") -> ParsedList:
    """Parse a list file, UT1 category tree or archive.

    Args:
        path: a file, a folder (UT1 tree or one category folder), or a `.tar.gz`/`.tgz`/
            `.gz` archive.
        fmt: a name from `FORMATS`, or "auto" to sniff it with `sniff_format`.

    Returns:
        The entries and problems; `format` is the format actually used.

    Raises:
        ListFormatError: the path is missing, unreadable or binary, or `fmt` is unknown.
    """
    if fmt == "auto":
        fmt = sniff_format(path)
    elif fmt not in FORMATS:
        raise ListFormatError(
            path, f"unknown list format {fmt!r} (expected auto or one of {', '.join(FORMATS)})"
        )
    out = ParsedList(path=str(path), format=fmt)
    with gc_paused():
        if fmt == "ut1":
            ut1.parse_path(str(path), out)
        else:
            _TEXT_PARSERS[fmt](read_text(path), str(path), out, None)
    return out


def sniff_format(path: str) -> str:
    """Guess the format of a list from its name and its first non-comment lines.

    Folders and tar archives are UT1 trees; files named `domains`, `urls`, `expressions`,
    `very_restrictive_expression` or `keywords` (optionally `.gz`/`.txt`) are that format
    (a UT1 `usage` file is `ut1`).
    Otherwise the first 200 non-comment lines vote: `||`/`@@||`/`|x^` lines for adblock,
    `address=/`, `server=/`, `local=/` for dnsmasq, `$ORIGIN`/`$TTL`/SOA/CNAME for RPZ,
    "IP name..." for hosts, 64 hex digits for SHA-256 (`sha256-urls` when the file name
    contains "url"), `host/path` for URL lists, anything else for plain domains. An empty
    file is a domain list. Keyword lists are only recognised by name (`keywords`).

    Raises:
        ListFormatError: the path does not exist or cannot be read, or holds binary data.
    """
    p = Path(path)
    if p.is_dir():
        return "ut1"
    if not p.exists():
        raise ListFormatError(str(path), "no such file or folder")
    name = p.name.lower()
    if ut1.is_archive(p):
        return "ut1"
    stem = name.removesuffix(".gz").removesuffix(".txt")
    if stem in _NAMED_FILES:
        return _NAMED_FILES[stem]
    head = read_head(path, _SNIFF_BYTES)
    return _sniff_text(decode(head, str(path)), "url" in name)


def _sniff_text(text: str, url_named: bool) -> str:
    """Vote on the format from the first `_SNIFF_LINES` meaningful lines of `text`."""
    votes = dict.fromkeys(("adblock", "dnsmasq", "rpz", "hosts", "sha256", "urls", "domains"), 0)
    seen = 0
    for raw in split_lines(text):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("[adblock") or line.startswith("[Adblock"):
            return "adblock"
        if line.startswith(("#", "!", ";")):
            continue
        votes[_vote(line)] += 1
        seen += 1
        if seen >= _SNIFF_LINES:
            break
    # Ties go to the more specific format (dict order above).
    best = max(votes, key=lambda fmt: votes[fmt]) if seen else "domains"
    if best == "sha256":
        return "sha256-urls" if url_named else "sha256-domains"
    return best


def _vote(line: str) -> str:
    """Which format one non-comment line looks like."""
    if line.startswith(("||", "@@", "|")) or "^" in line:
        return "adblock"
    if line.startswith(("address=/", "server=/", "local=/")):
        return "dnsmasq"
    if line.startswith(("$ORIGIN", "$TTL", "$INCLUDE")):
        return "rpz"
    fields = line.split()
    upper = {field.upper() for field in fields[1:]}
    if "CNAME" in upper or "SOA" in upper or ("NS" in upper and "IN" in upper):
        return "rpz"
    looks_like_ip = fields[0][:1].isdigit() or ":" in fields[0]
    if len(fields) >= 2 and looks_like_ip and normalize_ip(fields[0]) is not None:
        return "hosts"
    if len(line) == 64 and _HEX.issuperset(line):
        return "sha256"
    if "/" in line and len(fields) == 1:
        return "urls"
    return "domains"

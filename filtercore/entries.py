"""What a list parser produces: entries to compile, and the lines it could not use."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from filtercore.verdict import Action


class Kind(enum.IntEnum):
    """The kind of an entry, which decides the table or automaton it is compiled into."""

    DOMAIN = 1  # value: normalised name (A-labels, lower case, no trailing dot)
    IP = 2  # value: an IPv4/IPv6 address in canonical text form (ipaddress module)
    URL = 3  # value: "host/path" with scheme, port and leading www/web/ftp label stripped
    KEYWORD = 4  # value: lower-cased keyword; mode: one of KEYWORD_MODES
    KEYWORD_EXCEPTION = 5  # value: lower-cased word whose occurrences cancel keyword hits
    EXPRESSION = 6  # value: a regular expression (Python `re` syntax, from UT1 ERE)
    SHA256_DOMAIN = 7  # value: 64 lower-case hex digits, SHA-256 of a normalised name
    SHA256_URL = 8  # value: 64 hex digits, SHA-256 of a Safe Browsing URL expression


class Scope(enum.IntFlag):
    """Which names a domain entry covers."""

    SELF = 1  # the name itself
    BELOW = 2  # every name below it, on a label boundary
    SUBTREE = SELF | BELOW  # the default: `example.com` covers itself and `a.example.com`


KEYWORD_MODES = ("substring", "label", "word")


class Entry(NamedTuple):
    """One usable rule from a list.

    `action` is the action the rule itself states (an `@@` AdBlock rule or an RPZ
    passthru is an allow even in a block list); `None` means "the list's action".
    `category` is the *source* category for multi-category trees (UT1 folder name), `None`
    for "the list's category". `line` is 1-based within `source` (a path inside an archive
    is written `archive.tar.gz!adult/domains`).
    """

    kind: Kind
    value: str
    line: int
    source: str
    action: Action | None = None
    scope: Scope = Scope.SUBTREE
    mode: str = "word"  # keyword boundary mode; ignored for other kinds
    category: str | None = None
    nodata: bool = False  # RPZ `CNAME *.`: answer NODATA rather than NXDOMAIN


class Problem(NamedTuple):
    """A malformed or unsupported line: counted, reported, and skipped."""

    source: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.text!r}"


@dataclass
class ParsedList:
    """The result of parsing one list file or category tree."""

    path: str
    format: str  # the format used (the sniffed one when "auto" was asked for)
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Source category -> "black"/"white", from UT1 `usage` files.
    usage: dict[str, str] = field(default_factory=dict)

"""URL lists (UT1/squidGuard `urls` files): one `host/path` rule a line, `#` comments.

Each rule is reduced by `filtercore.urlrules.split_squidguard_url` (scheme, user-info,
port, fragment and a leading `www`/`web`/`ftp` label dropped; host normalised; path
lower-cased, query kept) and stored as `host/path` in a Kind.URL entry. Reported: rules
whose host is not a valid name or address, rules holding white space.
"""

from __future__ import annotations

from filtercore.entries import Entry, Kind, ParsedList, Problem
from filtercore.errors import InvalidURLError
from filtercore.formats._common import content_lines
from filtercore.urlrules import rule_value


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse a URL list into `out` (see `formats.TextParser`)."""
    for number, line in content_lines(text, source, out):
        if any(char.isspace() for char in line):
            out.problems.append(Problem(source, number, line, "white space inside a URL"))
            continue
        try:
            value = rule_value(line)
        except InvalidURLError as exc:
            out.problems.append(Problem(source, number, line, exc.reason))
            continue
        out.entries.append(Entry(Kind.URL, value, number, source, category=category))

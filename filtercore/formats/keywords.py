"""Keyword lists: one keyword a line, with an optional boundary mode.

- `sex` or `sex$word`: a hit only where the keyword is delimited by the UT1 delimiter class
  `[-.?+=/_]` or the string's ends (the default, which spares `essex.gov.uk`);
- `sex$label`: a hit only where the keyword is a whole DNS label;
- `sex$substring`: a hit anywhere;
- `@@essex`: an exception (Kind.KEYWORD_EXCEPTION) that cancels keyword hits inside a
  matching `essex`.

Keywords are lower-cased (names are matched lower-cased). `#` starts a comment line.
Reported: an empty keyword, an unknown mode, a mode on an exception, white space inside.
"""

from __future__ import annotations

from filtercore.entries import KEYWORD_MODES, Entry, Kind, ParsedList
from filtercore.formats._common import parse_each_line

DEFAULT_MODE = "word"


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse a keyword list into `out` (see `formats.TextParser`)."""
    parse_each_line(text, source, out, category, _parse_keyword)


def _parse_keyword(
    line: str, number: int, source: str, out: ParsedList, category: str | None
) -> str | None:
    """Add the entry one line states; return why it cannot be used, or None."""
    exception = line.startswith("@@")
    body = line[2:] if exception else line
    word, dollar, mode = body.rpartition("$") if "$" in body else (body, "", "")
    word = word.strip().lower()
    mode = mode.strip().lower()
    if not word:
        return "empty keyword"
    if any(char.isspace() for char in word):
        return "white space inside a keyword (names and URLs never hold it)"
    if exception:
        if dollar:
            return f"a mode (${mode}) on an exception: exceptions cancel hits whatever the mode"
        out.entries.append(Entry(Kind.KEYWORD_EXCEPTION, word, number, source, category=category))
        return None
    if dollar and mode not in KEYWORD_MODES:
        return f"unknown mode ${mode} (expected $substring, $label or $word)"
    out.entries.append(
        Entry(Kind.KEYWORD, word, number, source, mode=mode or DEFAULT_MODE, category=category)
    )
    return None

"""Expression lists: one POSIX extended regular expression (ERE) a line, as UT1 ships them.

squidGuard compiles these with `regcomp(REG_EXTENDED)`; filterdns uses Python's `re`, so
each line is translated where ERE and Python disagree, then compiled to check it:

- inside a bracket expression a backslash is a literal character in ERE, an escape in
  Python: `[-\\?+=/_]` (UT1's delimiter class) becomes `[-\\\\?+=/_]`, which matches
  exactly the characters ERE does (the backslash included);
- POSIX classes `[[:alpha:]]`, `[[:digit:]]`, ... become explicit ranges;
- `[`, `&`, `~` and `|` inside brackets are escaped (Python reserves them for set
  operations); a `]` first in a bracket is a literal, as in ERE;
- an unmatched `)` is an ordinary character in GNU ERE and is escaped;
- GNU's word boundaries `\\<` and `\\>` become look-arounds.

Entry.value holds the translated (Python) pattern. Reported: a line that does not compile
(with `re`'s message), e.g. `*` at the start, which ERE rejects too.
"""

from __future__ import annotations

import re

from filtercore.entries import Entry, Kind, ParsedList, Problem
from filtercore.formats._common import content_lines

_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "xdigit": "0-9A-Fa-f",
    "word": "a-zA-Z0-9_",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}
# Literal in an ERE bracket, special in a Python set (escape, end, or set operation).
_SET_ESCAPED = frozenset("\\]&~|[")


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse an expression list into `out` (see `formats.TextParser`)."""
    for number, line in content_lines(text, source, out):
        try:
            pattern = ere_to_python(line)
            re.compile(pattern)
        except (re.error, ValueError) as exc:
            out.problems.append(Problem(source, number, line, f"invalid expression: {exc}"))
            continue
        out.entries.append(Entry(Kind.EXPRESSION, pattern, number, source, category=category))


def ere_to_python(pattern: str) -> str:
    """Translate a POSIX extended regular expression to Python `re` syntax.

    For example UT1's `[-\\?+=/_]` (backslash literal in ERE) becomes `[-\\\\?+=/_]`.

    Raises:
        ValueError: an unterminated bracket expression or an unknown POSIX class.
    """
    result: list[str] = []
    depth = 0
    index = 0
    length = len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\" and index + 1 < length:
            following = pattern[index + 1]
            if following == "<":
                result.append(r"\b(?=\w)")
            elif following == ">":
                result.append(r"\b(?<=\w)")
            else:
                result.append(char + following)
            index += 2
            continue
        if char == "[":
            translated, index = _bracket(pattern, index)
            result.append(translated)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                result.append(r"\)")
                index += 1
                continue
            depth -= 1
        result.append(char)
        index += 1
    return "".join(result)


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """Translate the bracket expression opening at `start`; return it and the index after it."""
    index = start + 1
    out = ["["]
    if index < len(pattern) and pattern[index] == "^":
        out.append("^")
        index += 1
    first = True
    while index < len(pattern):
        char = pattern[index]
        if char == "]" and not first:
            out.append("]")
            return "".join(out), index + 1
        first = False
        if char == "[" and pattern[index + 1 : index + 2] in (":", ".", "="):
            kind = pattern[index + 1]
            end = pattern.find(kind + "]", index + 2)
            if end < 0:
                raise ValueError(f"unterminated [{kind} in bracket expression")
            name = pattern[index + 2 : end]
            if kind == ":":
                if name not in _POSIX_CLASSES:
                    raise ValueError(f"unknown POSIX class [:{name}:]")
                out.append(_POSIX_CLASSES[name])
            else:
                out.append(re.escape(name))  # collating element / equivalence class
            index = end + 2
            continue
        if char in _SET_ESCAPED:
            out.append("\\" + char)
        else:
            out.append(char)
        index += 1
    raise ValueError(f"unterminated bracket expression at position {start}")

"""Expression rules: regular expressions matched against names and URLs (UT1 `expressions`).

Semantics: the rule that decides is the first, in rule order, whose pattern matches
anywhere in the text, case-insensitively (Python `re`).

Cost, measured on this machine (a shared 2-core VM, best of 5 runs) with the real UT1
files (``malware/expressions`` and ``adult/very_restrictive_expression``, 3 patterns) and
the 70-character URL
``http://www.example.com/news/2024/politics/article-12345.html?ref=home``, which matches
none of them (the common case, so every pattern runs):

- compiled with `re.IGNORECASE`, one by one: 18 µs per check; the flag alone makes the
  long alternations of the adult pattern about 10x slower (13.3 µs against 1.1 µs);
- as done here, the text lower-cased once and case-free patterns compiled without the
  flag: 3.7 to 5.6 µs per check, and about 1 µs for a bare host name such as
  ``www.wikipedia.org``;
- all patterns joined into one alternation ``(p0)|(p1)|...`` (which, with the match's
  ``lastindex``, would still tell which pattern matched): slower, 5.7 µs against 4.0 µs
  for the 3 real patterns and 8x slower than one by one for 60 synthetic ones, because
  `re` loses its literal-prefix scan and tries every alternative at every position. So
  it is not used.

Expression rules are therefore the costliest rules per check; they only run where no
domain entry matched (DESIGN.md, verdict semantics).

Lower-casing the text instead of asking `re` to ignore case gives the same answer for a
pattern that has no upper-case letter and no escape that can stand for one (``\\x41``,
``\\N{...}``, octal): such a pattern matches only lower-case letters, and a lower-cased
text offers every letter in lower case. Other patterns keep `re.IGNORECASE` (on the
lower-cased text, which gives the same answer). This is exact for ASCII, which covers
normalised names (A-labels) and canonical URLs; for a handful of non-ASCII letters
`str.lower` and `re`'s case folding differ (long s `ſ` against `s`, final sigma).
"""

from __future__ import annotations

import re

# Escapes that cannot produce an upper-case letter: removed before looking for one.
_HARMLESS_ESCAPE = re.compile(r"\\[^xuUN0-9]")
# An upper-case letter, or an escape that can stand for a character (and so for one).
_CASE_SENSITIVE = re.compile(r"[A-Z]|\\[xuUN0-9]")


def needs_ignorecase(pattern: str) -> bool:
    """True unless `pattern` can only match lower-case letters (see the module docstring)."""
    return bool(_CASE_SENSITIVE.search(_HARMLESS_ESCAPE.sub("", pattern)))


class ExpressionMatcher:
    """Finds the first pattern, in rule order, that matches a text.

    `patterns` holds ``(pattern, rule_index)``. Patterns are assumed valid (the list
    parser rejects the others); `re.error` propagates if one is not.
    """

    __slots__ = ("_patterns",)

    def __init__(self, patterns: list[tuple[str, int]]) -> None:
        self._patterns: list[tuple[re.Pattern[str], int, str]] = [
            (
                re.compile(pattern, re.IGNORECASE if needs_ignorecase(pattern) else 0),
                rule_index,
                pattern,
            )
            for pattern, rule_index in patterns
        ]

    def __len__(self) -> int:
        return len(self._patterns)

    def search(self, text: str) -> tuple[int, str] | None:
        """Return ``(rule_index, pattern)`` of the first pattern matching `text`, or None."""
        if not self._patterns:
            return None
        lowered = text.lower()
        for compiled, rule_index, pattern in self._patterns:
            if compiled.search(lowered) is not None:
                return rule_index, pattern
        return None

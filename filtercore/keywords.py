"""Keyword rules: one Aho-Corasick automaton over every keyword, with exception words.

A keyword rule blocks a name or URL that contains the keyword, subject to its boundary
mode (DESIGN.md, keywords), because a bare substring test blocks half of the county of
Sussex for the keyword ``sex`` (the Scunthorpe problem):

- ``substring``: anywhere in the text.
- ``label``: the hit is a whole DNS label, bounded by ``.`` or the ends of the text.
- ``word``: bounded on each side by the UT1 delimiter class ``[-.?+=/_]`` or an end of the
  text; ``/``, ``?`` and ``=`` are in the class because URLs are checked too.

An exception word (``@@essex`` in a keyword list) cancels every keyword hit that lies
within one of its own occurrences, whatever the keyword's mode.

The automaton (pyahocorasick) holds the keyword strings, so a check is one pass over the
text whatever the number of rules. Each key's value says which rules (mode, rule index)
use that string, so one string may be a keyword in several modes, and which exception
words contain it: an exception can only cover a hit of a keyword that occurs inside the
exception word, at a known offset, so a hit is tested against those few words with a
direct comparison at that offset. That is exact, lets the search stop at the first
surviving hit (an exception may end after the keyword it covers, ``sex`` in ``sexton``,
so matching exceptions in the automaton too would mean collecting the whole pass before
deciding), and exception words that contain no keyword are dropped at build time since
they can never cancel anything.
"""

from __future__ import annotations

from typing import NamedTuple

import ahocorasick  # type: ignore[import-not-found]  # ships no type information

from filtercore.entries import KEYWORD_MODES

WORD_DELIMITERS = frozenset("-.?+=/_")  # the UT1 delimiter class [-.?+=/_]
LABEL_DELIMITERS = frozenset(".")

_MODE_CODES = {name: code for code, name in enumerate(KEYWORD_MODES)}
_SUBSTRING, _LABEL, _WORD = (_MODE_CODES[name] for name in ("substring", "label", "word"))


class _Key(NamedTuple):
    """What one automaton key stands for."""

    text: str
    rules: tuple[tuple[int, int], ...]  # (mode code, rule index) per keyword rule, by index
    # (offset of the keyword inside the word, exception word) for every exception word
    # that contains the keyword, once per occurrence.
    covers: tuple[tuple[int, str], ...]


class KeywordMatcher:
    """Finds the first keyword rule that matches a text, honouring modes and exceptions.

    `keywords` holds ``(keyword, mode, rule_index)`` with mode one of ``substring``,
    ``label``, ``word``; `exceptions` holds ``(word, rule_index)``. Keywords and exception
    words are matched case-insensitively (both sides are lower-cased).
    """

    __slots__ = ("_automaton", "keyword_count", "exception_count")

    def __init__(
        self, keywords: list[tuple[str, str, int]], exceptions: list[tuple[str, int]]
    ) -> None:
        rules: dict[str, set[tuple[int, int]]] = {}
        for keyword, mode, rule_index in keywords:
            if mode not in _MODE_CODES:
                raise ValueError(f"unknown keyword mode {mode!r} (one of {KEYWORD_MODES})")
            if not keyword:
                raise ValueError(f"empty keyword (rule {rule_index})")
            rules.setdefault(keyword.lower(), set()).add((_MODE_CODES[mode], rule_index))
        exception_words = sorted({word.lower() for word, _ in exceptions if word})

        self._automaton: ahocorasick.Automaton | None = None
        self.keyword_count = len(keywords)
        self.exception_count = len(exception_words)
        if not rules:
            return  # no keyword can match: leave the automaton out (an empty one cannot search)
        automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        for text, used_by in rules.items():
            # Lowest rule index first, so the earliest rule in the lists explains a hit.
            ordered = tuple(sorted(used_by, key=lambda rule: rule[1]))
            automaton.add_word(text, _Key(text, ordered, _covers(text, exception_words)))
        automaton.make_automaton()
        self._automaton = automaton

    def search(self, text: str) -> tuple[int, str] | None:
        """Return ``(rule_index, keyword)`` of the first keyword hit in `text`, or None.

        "First" is the hit that ends earliest in the text (for hits ending at the same
        place, the order pyahocorasick reports them, longest first); among rules for the
        same keyword string, the lowest rule index. A hit only counts if its boundary mode
        holds and no exception occurrence covers it.
        """
        automaton = self._automaton
        if automaton is None or not text:
            return None
        text = text.lower()
        for end, (keyword, rules, covers) in automaton.iter(text):
            start = end - len(keyword) + 1
            if covers and _covered(text, start, covers):
                continue
            for mode, rule_index in rules:
                if mode == _SUBSTRING or _bounded(
                    text, start, end, WORD_DELIMITERS if mode == _WORD else LABEL_DELIMITERS
                ):
                    return rule_index, keyword
        return None


def _covers(keyword: str, exception_words: list[str]) -> tuple[tuple[int, str], ...]:
    """Every (offset, word) where `keyword` occurs inside an exception word."""
    found = []
    for word in exception_words:
        offset = word.find(keyword)
        while offset != -1:
            found.append((offset, word))
            offset = word.find(keyword, offset + 1)
    return tuple(found)


def _covered(text: str, start: int, covers: tuple[tuple[int, str], ...]) -> bool:
    """True if an exception word occurs in `text` around the hit starting at `start`."""
    return any(offset <= start and text.startswith(word, start - offset) for offset, word in covers)


def _bounded(text: str, start: int, end: int, delimiters: frozenset[str]) -> bool:
    """True if text[start:end + 1] has a delimiter or an end of the text on each side."""
    if start > 0 and text[start - 1] not in delimiters:
        return False
    return end + 1 >= len(text) or text[end + 1] in delimiters

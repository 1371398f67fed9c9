"""Expression (regular expression) rules, with the real UT1 expression files.

The UT1 files are read from ../shared/data/ut1 (real data, not copied into the
repository) through the `expressions` list parser, so the patterns are the ones the
matcher receives in production (POSIX ERE translated to Python `re`).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtercore.expressions import ExpressionMatcher, needs_ignorecase
from filtercore.formats import parse_list
from tests.filtercore.formats_support import UT1

UT1_FILES = [UT1 / "malware" / "expressions", UT1 / "adult" / "very_restrictive_expression"]


def _ut1_patterns() -> list[tuple[str, int]]:
    patterns: list[tuple[str, int]] = []
    for path in UT1_FILES:
        parsed = parse_list(str(path), "expressions")
        assert not parsed.problems
        patterns += [(entry.value, len(patterns) + i) for i, entry in enumerate(parsed.entries)]
    return patterns


@pytest.fixture(scope="module")
def ut1() -> ExpressionMatcher:
    patterns = _ut1_patterns()
    assert len(patterns) >= 3
    return ExpressionMatcher(patterns)


@pytest.mark.parametrize(
    ("text", "rule_index"),
    [
        ("1.2.3.4/search?q=123", 0),  # malware: search spam on a bare IP address
        ("www.hardcore-videos.example", 1),  # adult: listed word anywhere
        ("free-sex.example", 2),  # adult: delimited word with optional prefix/plural
        ("http://example.com/supersexs/", 2),
        ("PORN.example", 2),  # case-insensitive
        ("example.com/teens?x=1", 2),
    ],
)
def test_ut1_expressions_match(ut1: ExpressionMatcher, text: str, rule_index: int) -> None:
    found = ut1.search(text)
    assert found is not None
    assert found[0] == rule_index
    assert found[1] == _ut1_patterns()[rule_index][0]


@pytest.mark.parametrize(
    "text",
    [
        "essexbank.com",
        "sussex.ac.uk",
        "middlesexbank.com",
        "www.wikipedia.org",
        "http://www.example.com/news/2024/politics/article-12345.html?ref=home",
        "1.2.3.4/search?q=abc",
    ],
)
def test_ut1_expressions_spare(ut1: ExpressionMatcher, text: str) -> None:
    assert ut1.search(text) is None


def test_first_matching_rule_in_rule_order_wins() -> None:
    # "b" matches further left, but "c$" comes first in rule order.
    matcher = ExpressionMatcher([("c$", 10), ("b", 11)])
    assert matcher.search("abc") == (10, "c$")
    assert matcher.search("ab") == (11, "b")
    assert matcher.search("xyz") is None


def test_empty_matcher() -> None:
    matcher = ExpressionMatcher([])
    assert len(matcher) == 0
    assert matcher.search("anything") is None


@pytest.mark.parametrize(
    ("pattern", "needed"),
    [
        ("porn", False),
        (r"^[0-9]+\.[a-z]+\S*$", False),  # \S, \. are not letters to fold
        (r"\\S", True),  # "\\" is a literal backslash, so "S" is a literal upper-case S
        ("Porn", True),
        ("[A-Z]", True),
        (r"\x41", True),  # escapes that can stand for an upper-case letter
        (r"\N{LATIN CAPITAL LETTER A}", True),
        (r"\101", True),
        (r"(a)\1", True),  # conservative: numeric escapes keep the flag
    ],
)
def test_needs_ignorecase(pattern: str, needed: bool) -> None:
    assert needs_ignorecase(pattern) is needed


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("porn", "PoRn.example"),
        ("[A-Z]+x", "abcX"),
        (r"\x41b", "AB"),
        (r"\x41b", "ab"),
        ("Sex", "sex.example"),
        (r"\\S", "a\\s"),
    ],
)
def test_matching_ignores_case_either_way(pattern: str, text: str) -> None:
    assert ExpressionMatcher([(pattern, 0)]).search(text) == (0, pattern)


_PATTERNS = st.sampled_from(
    ["a", "A", "^b", "c$", "[a-c]+x", "[^a]B", r"\x41", "(ab|Ba)c", r"(a)\1", "x?y", r"\w\W"]
)


@given(
    patterns=st.lists(_PATTERNS, max_size=6),
    text=st.text(alphabet="aAbBcCxXy.-", max_size=12),
)
def test_agrees_with_plain_ignorecase_search(patterns: list[str], text: str) -> None:
    expected = next(
        ((i, p) for i, p in enumerate(patterns) if re.search(p, text, re.IGNORECASE)), None
    )
    assert ExpressionMatcher([(p, i) for i, p in enumerate(patterns)]).search(text) == expected

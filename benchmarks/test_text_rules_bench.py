"""Keyword and expression rules: the cost of a check that no domain entry decided.

    python -m pytest benchmarks/test_text_rules_bench.py --benchmark-enable -s
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from filtercore.expressions import ExpressionMatcher
from filtercore.formats import parse_list
from filtercore.keywords import KeywordMatcher

UT1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ut1"
HOST = "static.images.example-shop.com"
URL = "static.images.example-shop.com/catalogue/items/2026/summer/page.html?id=42&lang=en"


def _keywords() -> KeywordMatcher:
    rng = random.Random(3)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(1000)}
    modes = ("word", "label", "substring")
    keywords = [(w, modes[i % 3], i) for i, w in enumerate(sorted(words))]
    return KeywordMatcher(keywords, [("essex", len(keywords))])


def _ut1_expressions() -> ExpressionMatcher:
    patterns = []
    for path in sorted(UT1.glob("*/expressions")):
        entries = parse_list(str(path), "expressions").entries
        patterns += [(e.value, len(patterns) + i) for i, e in enumerate(entries)]
    return ExpressionMatcher(patterns)


@pytest.mark.benchmark(group="text rules")
@pytest.mark.parametrize("text", [HOST, URL], ids=["host", "url"])
def test_keyword_search(benchmark, text: str) -> None:  # type: ignore[no-untyped-def]
    matcher = _keywords()
    assert matcher.search(text) is None
    benchmark(matcher.search, text)


@pytest.mark.benchmark(group="text rules")
@pytest.mark.parametrize("text", [HOST, URL], ids=["host", "url"])
def test_ut1_expression_search(benchmark, text: str) -> None:  # type: ignore[no-untyped-def]
    matcher = _ut1_expressions()
    assert matcher.search(text) is None  # the cost of the common case: no pattern matches
    benchmark(matcher.search, text)

"""Keyword rules: boundary modes, exceptions, and agreement with a brute-force model.

The names in `SCUNTHORPE_NAMES` are real names from real block and allow lists that a
bare ``sex`` substring test blocks by mistake (issue 2, DESIGN.md keywords).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtercore.keywords import LABEL_DELIMITERS, WORD_DELIMITERS, KeywordMatcher

SCUNTHORPE_NAMES = [
    "essexbank.com",
    "sussex.ac.uk",
    "middlesexbank.com",
    "citizensexchangebank.com",
    "campusexpo.org",
]


@pytest.mark.parametrize("name", SCUNTHORPE_NAMES)
def test_word_mode_spares_names_that_merely_contain_the_keyword(name: str) -> None:
    assert KeywordMatcher([("sex", "word", 7)], []).search(name) is None


@pytest.mark.parametrize(
    "text",
    [
        "free-sex.example",
        "sex.example",
        "example.com/sex/",
        "example.com/?q=sex",
        "example.com/a=sex+toys",
        "my_sex_blog.example",
        "sex",
        "SEX.Example",
    ],
)
def test_word_mode_matches_the_delimited_word(text: str) -> None:
    assert KeywordMatcher([("sex", "word", 7)], []).search(text) == (7, "sex")


def test_substring_mode_with_an_exception() -> None:
    matcher = KeywordMatcher([("sex", "substring", 1)], [("essex", 2)])
    assert matcher.search("essex.gov.uk") is None
    assert matcher.search("sexshop.example") == (1, "sex")
    # "sussex" holds "ssex", not "essex": the exception does not cover this hit.
    assert matcher.search("sussex.ac.uk") == (1, "sex")


def test_an_exception_only_cancels_hits_inside_its_own_occurrences() -> None:
    matcher = KeywordMatcher([("sex", "substring", 1)], [("essex", 2)])
    assert matcher.search("essex-sexshop.example") == (1, "sex")
    assert matcher.search("essex.essex.example") is None


def test_an_exception_that_ends_after_the_keyword() -> None:
    matcher = KeywordMatcher([("sex", "substring", 1)], [("sexton", 2)])
    assert matcher.search("sexton-blount.example") is None
    assert matcher.search("sextant.example") == (1, "sex")


def test_label_mode() -> None:
    matcher = KeywordMatcher([("porn", "label", 3)], [])
    assert matcher.search("porn.example.com") == (3, "porn")
    assert matcher.search("www.porn.example") == (3, "porn")
    assert matcher.search("example.porn") == (3, "porn")
    assert matcher.search("pornhub.com") is None
    assert matcher.search("free-porn.example") is None  # "-" bounds a word, not a label


def test_same_keyword_in_several_modes_reports_the_mode_that_holds() -> None:
    matcher = KeywordMatcher([("sex", "label", 1), ("sex", "word", 2), ("sex", "substring", 3)], [])
    assert matcher.search("sex.example") == (1, "sex")
    assert matcher.search("free-sex.example") == (2, "sex")
    assert matcher.search("sussex.example") == (3, "sex")


def test_lowest_rule_index_wins_for_the_same_keyword() -> None:
    matcher = KeywordMatcher([("casino", "word", 9), ("casino", "word", 4)], [])
    assert matcher.search("casino.example") == (4, "casino")


def test_keywords_and_exceptions_are_case_insensitive() -> None:
    matcher = KeywordMatcher([("Poker", "substring", 0)], [("POKEMON", 1)])
    assert matcher.search("videopoker.example") == (0, "poker")
    assert matcher.search("Pokemon.example") is None


def test_empty_matchers_never_match() -> None:
    assert KeywordMatcher([], []).search("sex.example") is None
    assert KeywordMatcher([], [("essex", 1)]).search("essex.example") is None
    assert KeywordMatcher([("sex", "word", 0)], []).search("") is None


def test_bad_rules_are_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        KeywordMatcher([("sex", "regex", 0)], [])
    with pytest.raises(ValueError, match="empty"):
        KeywordMatcher([("", "word", 0)], [])


def test_delimiter_classes() -> None:
    assert set("-.?+=/_") == WORD_DELIMITERS
    assert {"."} == LABEL_DELIMITERS


# Property test: the automaton agrees with a brute-force scan of every occurrence.

_ALPHABET = "abs.-/x"
_words = st.text(alphabet="abs", min_size=1, max_size=3)


def _reference(
    text: str, keywords: list[tuple[str, str, int]], exceptions: list[tuple[str, int]]
) -> list[tuple[int, int, int, str]]:
    """Every valid hit as (end, start, rule_index, keyword)."""
    covers = []
    for word, _ in exceptions:
        covers += [(i, i + len(word) - 1) for i in range(len(text)) if text.startswith(word, i)]
    hits = []
    for keyword, mode, rule_index in keywords:
        for start in range(len(text)):
            if not text.startswith(keyword, start):
                continue
            end = start + len(keyword) - 1
            delimiters = {"word": WORD_DELIMITERS, "label": LABEL_DELIMITERS}.get(mode)
            if delimiters is not None:
                if start > 0 and text[start - 1] not in delimiters:
                    continue
                if end + 1 < len(text) and text[end + 1] not in delimiters:
                    continue
            if any(c_start <= start and end <= c_end for c_start, c_end in covers):
                continue
            hits.append((end, start, rule_index, keyword))
    return hits


@given(
    text=st.text(alphabet=_ALPHABET, max_size=20),
    keywords=st.lists(
        st.tuples(_words, st.sampled_from(["substring", "label", "word"])), max_size=5
    ),
    exceptions=st.lists(st.text(alphabet="abs", min_size=1, max_size=5), max_size=3),
)
def test_agrees_with_brute_force(
    text: str, keywords: list[tuple[str, str]], exceptions: list[str]
) -> None:
    rules = [(word, mode, index) for index, (word, mode) in enumerate(keywords)]
    excepted = [(word, 100 + index) for index, word in enumerate(exceptions)]
    found = KeywordMatcher(rules, excepted).search(text)
    hits = _reference(text, rules, excepted)
    if not hits:
        assert found is None
        return
    assert found is not None
    rule_index, keyword = found
    earliest_end = min(hit[0] for hit in hits)
    chosen = [hit for hit in hits if hit[0] == earliest_end and hit[3] == keyword]
    assert chosen, (found, hits)  # the reported keyword is a valid hit ending first
    assert rule_index == min(hit[2] for hit in chosen)

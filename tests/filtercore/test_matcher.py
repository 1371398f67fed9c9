"""The Matcher's verdict rules, against hand-made lists and the real UT1 files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from filtercore import Action, InvalidNameError, ListSpec, Matcher, RuleKind

UT1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "ut1"
SECRET = bytes(range(16))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.fixture
def matcher(tmp_path: Path) -> Matcher:
    block = write(
        tmp_path,
        "adult.txt",
        "# adult test list\nexample.com\nbad.example.org\n*.wild.example\n10.9.8.7\n2001:db8::66\n",
    )
    gambling = write(tmp_path, "gambling.txt", "casino.example\nexample.com\n")
    allow = write(
        tmp_path,
        "rules.adblock",
        "! allow rules\n@@||ok.example.com^\n|exact.example^\n@@||casino.example^\n",
    )
    keywords = write(tmp_path, "kw/keywords", "sex\n@@essex\n")
    return Matcher.from_lists(
        [
            ListSpec(block, name="adult-test", category="adult"),
            ListSpec(gambling, name="gambling-test", category="gambling"),
            ListSpec(allow, name="exceptions", category="adult"),
            ListSpec(keywords, name="kw", category="adult", format="keywords"),
        ],
        secret=SECRET,
    )


def test_a_domain_entry_covers_the_name_and_below_on_label_boundaries(matcher: Matcher) -> None:
    assert matcher.check("example.com").blocked
    assert matcher.check("a.b.example.com").blocked
    assert matcher.check("badexample.com").action is Action.NONE
    assert matcher.check("example.com.evil").action is Action.NONE
    assert matcher.check("com").action is Action.NONE


def test_normalisation_comes_first(matcher: Matcher) -> None:
    for form in ("EXAMPLE.com", "www.Example.COM.", "  example.com \t"):
        verdict = matcher.check(form)
        assert verdict.blocked and verdict.matched == "example.com"


def test_the_most_specific_entry_decides(matcher: Matcher) -> None:
    assert matcher.check("ok.example.com").action is Action.ALLOW
    assert matcher.check("deep.ok.example.com").action is Action.ALLOW
    assert matcher.check("notok.example.com").blocked


def test_allow_beats_block_at_equal_specificity(matcher: Matcher) -> None:
    verdict = matcher.check("casino.example")
    assert verdict.action is Action.ALLOW
    assert verdict.list == "exceptions"


def test_wildcard_and_exact_scopes(matcher: Matcher) -> None:
    assert matcher.check("wild.example").action is Action.NONE
    assert matcher.check("x.wild.example").blocked
    assert matcher.check("exact.example").blocked
    assert matcher.check("sub.exact.example").action is Action.NONE


def test_a_verdict_names_what_decided_it(matcher: Matcher, tmp_path: Path) -> None:
    verdict = matcher.check("x.bad.example.org")
    assert verdict.action is Action.BLOCK
    assert verdict.category == "adult"
    assert verdict.list == "adult-test"
    assert verdict.source == str(tmp_path / "adult.txt")
    assert verdict.line == 3
    assert verdict.rule == "bad.example.org"
    assert verdict.matched == "bad.example.org"
    assert verdict.kind is RuleKind.DOMAIN
    exact = matcher.check("exact.example")
    assert (exact.rule, exact.line, exact.list) == ("|exact.example^", 3, "exceptions")


def test_a_name_in_two_lists_reports_both_categories(matcher: Matcher) -> None:
    verdict = matcher.check("www.example.com")
    assert verdict.category == "adult"
    assert set(verdict.categories) == {"adult", "gambling"}


def test_categories_restrict_what_blocks(matcher: Matcher, tmp_path: Path) -> None:
    verdict = matcher.check("www.example.com", categories=["gambling"])
    assert verdict.blocked
    assert (verdict.category, verdict.list, verdict.line) == ("gambling", "gambling-test", 2)
    assert verdict.rule == "example.com"
    assert matcher.check("bad.example.org", categories=["gambling"]).action is Action.NONE
    # An allow applies whatever the categories.
    assert matcher.check("ok.example.com", categories=["gambling"]).action is Action.ALLOW


def test_ip_literals_are_entries(matcher: Matcher) -> None:
    assert matcher.check("10.9.8.7").blocked
    assert matcher.check_ip("10.9.8.7").kind is RuleKind.IP
    assert matcher.check_ip("2001:DB8:0::66").blocked
    assert matcher.check_ip("10.9.8.8").action is Action.NONE
    with pytest.raises(InvalidNameError):
        matcher.check_ip("not-an-ip")


def test_keywords_apply_only_where_no_domain_entry_matched(matcher: Matcher) -> None:
    hit = matcher.check("free-sex.test")
    assert hit.blocked and hit.kind is RuleKind.KEYWORD and hit.matched == "sex"
    assert matcher.check("essex.gov.uk").action is Action.NONE
    assert matcher.check("sussex.ac.uk").action is Action.NONE
    # An explicit allow beats a keyword hit.
    assert matcher.check("sex.ok.example.com").action is Action.ALLOW


def test_invalid_names_raise_with_a_reason(matcher: Matcher) -> None:
    with pytest.raises(InvalidNameError, match="empty label"):
        matcher.check("a..example.com")
    with pytest.raises(InvalidNameError):
        matcher.check_many(["example.com", "bad..name"])
    with pytest.raises(TypeError):
        matcher.check(b"example.com")  # type: ignore[arg-type]


def test_check_many_agrees_with_check(matcher: Matcher) -> None:
    names = ["example.com", "ok.example.com", "nothing.test", "10.9.8.7", "free-sex.test"]
    assert matcher.check_many(names) == [matcher.check(n) for n in names]
    assert matcher.check_many(names, categories=["gambling"]) == [
        matcher.check(n, categories=["gambling"]) for n in names
    ]


def test_idn_names_match_their_a_label_entries(tmp_path: Path) -> None:
    lst = write(tmp_path, "idn.txt", "bücher.example\nxn--caf-dma.example\n")
    m = Matcher.from_lists([ListSpec(lst, category="adult")])
    assert m.check("BÜCHER.example").matched == "xn--bcher-kva.example"
    assert m.check("www.café.example").blocked


def test_confidential_sha256_domain_list(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"secret.example").hexdigest()
    lst = write(tmp_path, "hotline.sha256", f"# hotline\n{digest.upper()}\n")
    m = Matcher.from_lists([ListSpec(lst, category="adult", format="sha256-domains")])
    verdict = m.check("www.Secret.example")
    assert verdict.blocked and verdict.kind is RuleKind.HASHED_DOMAIN
    assert verdict.matched == digest  # the digest, never the plain listed name
    assert verdict.line == 2
    assert m.check("secret.example.com").action is Action.NONE


def test_url_rules_follow_squidguard(tmp_path: Path) -> None:
    urls = write(tmp_path, "adult/urls", "example.org/bad\nwww.example.net/x/y\n")
    domains = write(tmp_path, "dom.txt", "blocked.example\n")
    m = Matcher.from_lists(
        [ListSpec(urls, category="adult", format="urls"), ListSpec(domains, category="adult")]
    )
    assert m.check_url("http://www.example.org/bad/page.html").blocked
    assert m.check_url("https://example.org:8443/bad").blocked
    assert m.check_url("http://example.org/badx").action is Action.NONE
    assert m.check_url("http://example.net/x/y/z").kind is RuleKind.URL
    assert m.check_url("http://blocked.example/anything").kind is RuleKind.DOMAIN


def test_hashed_url_expressions(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"evil.example/path/").hexdigest()
    lst = write(tmp_path, "hotline-urls.sha256", digest + "\n")
    m = Matcher.from_lists([ListSpec(lst, category="adult", format="sha256-urls")])
    verdict = m.check_url("http://www.evil.example/path/page.html?x=1")
    assert verdict.blocked and verdict.kind is RuleKind.HASHED_URL
    assert verdict.matched == digest
    assert m.check_url("http://evil.example/other/").action is Action.NONE


def test_real_ut1_category_tree(tmp_path: Path) -> None:
    m = Matcher.from_lists([ListSpec(str(UT1), name="ut1")])
    lines = (UT1 / "gambling" / "domains").read_text().splitlines()
    line_no, name = next(
        (i + 1, line.strip()) for i, line in enumerate(lines) if line.strip() and "." in line
    )
    verdict = m.check(f"www.{name}")
    if verdict.list != "ut1/gambling":
        # The name is in several categories: it must still be one that lists it.
        assert "gambling" in verdict.categories
    else:
        assert (verdict.category, verdict.line, verdict.rule) == ("gambling", line_no, name)
    # sexual_education is a white category: its entries allow.
    edu = next(
        line.strip()
        for line in (UT1 / "sexual_education" / "domains").read_text().splitlines()
        if line.strip()
    )
    assert m.check(edu).action is Action.ALLOW

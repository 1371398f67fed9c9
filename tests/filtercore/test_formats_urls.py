"""URL lists and squidGuard URL rule semantics (filtercore.urlrules)."""

from __future__ import annotations

import pytest

from filtercore.entries import Kind
from filtercore.errors import InvalidURLError
from filtercore.formats import parse_list
from filtercore.urlrules import UrlRules, rule_value, split_squidguard_url
from tests.filtercore.formats_support import UT1, parse, reasons, ut1_lines, values


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a/b", ("example.com", "/a/b")),
        ("https://user:pw@WWW.Example.com:8080/A?Q=1#frag", ("example.com", "/a?q=1")),
        ("www2.example.com/x", ("example.com", "/x")),
        ("web.example.com", ("example.com", "")),
        ("ftp.example.com/pub/", ("example.com", "/pub/")),
        ("www.com/x", ("www.com", "/x")),  # stripping would leave a single label
        ("wwwx.example.com/", ("wwwx.example.com", "/")),
        ("example.com?q=1", ("example.com", "/?q=1")),
        ("http://192.0.2.1:81/a", ("192.0.2.1", "/a")),
        ("http://[2001:DB8::1]:8080/a", ("2001:db8::1", "/a")),
        ("bücher.example/x", ("xn--bcher-kva.example", "/x")),
    ],
)
def test_split_squidguard_url(url: str, expected: tuple[str, str]) -> None:
    assert split_squidguard_url(url) == expected


def test_strip_label_can_be_turned_off_for_domain_lookups() -> None:
    assert split_squidguard_url("http://www.example.com/", strip_label=False)[0] == (
        "www.example.com"
    )


@pytest.mark.parametrize("url", ["", "http:///path", "http://bad..host/x", "http://a b/"])
def test_invalid_urls_raise(url: str) -> None:
    with pytest.raises(InvalidURLError):
        split_squidguard_url(url)


def test_rule_values_drop_trailing_slashes() -> None:
    assert rule_value("www.example.com/x/") == "example.com/x"
    assert rule_value("example.com/") == "example.com"


def test_url_rules_match_on_path_boundaries_longest_first() -> None:
    rules = UrlRules(
        [
            (rule_value("a.com/x"), 0),
            (rule_value("a.com/x/y"), 1),
            (rule_value("b.com"), 2),
            (rule_value("c.com/index.php?"), 3),
            (rule_value("d.com/p?id=1"), 4),
        ]
    )
    assert len(rules) == 5
    assert rules.match("http://a.com/x") == 0
    assert rules.match("http://www.a.com/x/") == 0
    assert rules.match("a.com/x?q=1") == 0
    assert rules.match("a.com/x/y/z") == 1
    assert rules.match("a.com/xy") is None
    assert rules.match("a.com/") is None
    assert rules.match("sub.a.com/x") is None  # hosts must be equal
    assert rules.match("https://b.com/anything") == 2
    assert rules.match("b.com") == 2
    assert rules.match("c.com/index.php?page=2") == 3
    assert rules.match("c.com/index.php") is None
    assert rules.match("d.com/p?id=1&x=2") == 4
    assert rules.match("d.com/p?id=12") is None
    assert rules.match("A.COM/X/Y") == 1  # paths compare lower-cased


def test_url_list_entries_and_problems(tmp_path) -> None:
    text = "# urls\nwww.Example.com/Path/\nhttp://example.org:80/x?y\nbad..host/x\na.com/x y\n"
    parsed = parse(tmp_path, "urls", text, name="urls")
    assert values(parsed) == ["example.com/path", "example.org/x?y"]
    assert [e.line for e in parsed.entries] == [2, 3]
    assert all(e.kind is Kind.URL for e in parsed.entries)
    got = reasons(parsed)
    assert got == [(4, "host: empty label"), (5, "white space inside a URL")]


def test_real_ut1_adult_urls() -> None:
    lines = ut1_lines("adult", "urls")
    parsed = parse_list(str(UT1 / "adult" / "urls"), "urls")
    assert len(parsed.entries) + len(parsed.problems) == len([x for x in lines if x.strip()])
    assert parsed.problems == []
    by_line = {entry.line: entry.value for entry in parsed.entries}
    assert by_line[1] == "020sextoy.com/sk"
    assert by_line[1090] == "zoomerang.app/ai-gallery/girl-young-sexy-panties"
    rules = UrlRules((entry.value, entry.line) for entry in parsed.entries)
    assert rules.match("http://020sextoy.com/sk/item?id=3") == 1
    assert rules.match("http://020sextoy.com/skate") is None


def test_real_ut1_rules_with_stripped_labels() -> None:
    parsed = parse_list(str(UT1 / "games" / "urls"), "urls")
    by_line = {entry.line: entry.value for entry in parsed.entries}
    assert by_line[658] == "microsoft.com/deskapps/games"  # was ftp.microsoft.com/...
    assert by_line[1610] == "orange.co.uk/p/games"  # was web.orange.co.uk/...

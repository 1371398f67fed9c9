"""AdBlock-style DNS rules."""

from __future__ import annotations

from filtercore.entries import Kind, Scope
from filtercore.verdict import Action
from tests.filtercore.formats_support import parse, reasons

RULES = """\
[Adblock Plus 2.0]
! Title: test list
# a hash comment
||ads.example.com^
@@||good.example.com^
|exact.example.org^
||Upper.Example^|
||198.51.100.7^
@@|exact-allow.example^
"""


def test_anchors_allow_rules_and_comments(tmp_path) -> None:
    parsed = parse(tmp_path, "adblock", RULES)
    got = [(e.line, e.kind, e.value, e.scope, e.action) for e in parsed.entries]
    assert got == [
        (4, Kind.DOMAIN, "ads.example.com", Scope.SUBTREE, None),
        (5, Kind.DOMAIN, "good.example.com", Scope.SUBTREE, Action.ALLOW),
        (6, Kind.DOMAIN, "exact.example.org", Scope.SELF, None),
        (7, Kind.DOMAIN, "upper.example", Scope.SUBTREE, None),
        (8, Kind.IP, "198.51.100.7", Scope.SUBTREE, None),
        (9, Kind.DOMAIN, "exact-allow.example", Scope.SELF, Action.ALLOW),
    ]
    assert parsed.problems == []


def test_unsupported_rules_are_reported_not_guessed(tmp_path) -> None:
    text = "\n".join(
        [
            "||important.example^$important",
            "@@||tp.example^$third-party,important",
            "example.com##.banner",
            "##.ad",
            "example.com#@#.ad",
            "plain.example",
            "||noseparator.example",
            "||*.wild.example^",
            "/ads[0-9]+\\.example/",
            "||example.com/path^",
            "||bad..name^",
            "||kept.example^",
            "/^ads\\.example$/",
        ]
    )
    parsed = parse(tmp_path, "adblock", text)
    assert [(e.line, e.value) for e in parsed.entries] == [(12, "kept.example")]
    got = dict(reasons(parsed))
    assert got[1] == "unsupported modifier $important"
    assert got[2] == "unsupported modifier $third-party, $important"
    assert got[3].startswith("cosmetic rule (##)")
    assert got[4].startswith("cosmetic rule (##)")
    assert got[5].startswith("cosmetic rule (#@#)")
    assert got[6].startswith("no || or | anchor")
    assert got[7].startswith("no ^ separator")
    assert got[8] == "wildcard pattern: not supported"
    assert got[9] == "regular-expression rule: not supported"
    assert got[10] == "URL or path rule: not a host rule"
    assert got[11] == "empty label"
    assert got[13] == "regular-expression rule: not supported"  # its `$` is no modifier
    assert len(parsed.problems) == 12

"""Response Policy Zone files."""

from __future__ import annotations

from filtercore.entries import Kind, Scope
from filtercore.verdict import Action
from tests.filtercore.formats_support import parse, reasons

ZONE = """\
$TTL 300
$ORIGIN rpz.example.
@ IN SOA localhost. root.localhost. (
        2024010101 ; serial
        3600 900 604800 300 )
  IN NS localhost.
; blocked names
bad.example CNAME .
*.bad.example CNAME .
nodata.example 300 IN CNAME *.
ok.example CNAME rpz-passthru.
abs.example.rpz.example. CNAME .
Upper.Example IN 60 CNAME . ; class before ttl
"""


def test_triggers_and_actions(tmp_path) -> None:
    parsed = parse(tmp_path, "rpz", ZONE)
    got = [(e.line, e.value, e.scope, e.action, e.nodata) for e in parsed.entries]
    assert got == [
        (8, "bad.example", Scope.SELF, None, False),
        (9, "bad.example", Scope.BELOW, None, False),
        (10, "nodata.example", Scope.SELF, None, True),
        (11, "ok.example", Scope.SELF, Action.ALLOW, False),
        (12, "abs.example", Scope.SELF, None, False),
        (13, "upper.example", Scope.SELF, None, False),
    ]
    assert all(entry.kind is Kind.DOMAIN for entry in parsed.entries)
    assert parsed.problems == []


def test_origin_from_an_absolute_soa_owner(tmp_path) -> None:
    text = "rpz.local. SOA ns. admin. 1 2 3 4 5\nx.example.rpz.local. CNAME .\n"
    parsed = parse(tmp_path, "rpz", text)
    assert [(e.line, e.value) for e in parsed.entries] == [(2, "x.example")]


def test_owner_omitted_on_a_continuation_line(tmp_path) -> None:
    text = '$ORIGIN rpz.\ncont.example CNAME .\n   TXT "reason"\n'
    parsed = parse(tmp_path, "rpz", text)
    assert [e.value for e in parsed.entries] == ["cont.example"]
    assert reasons(parsed) == [(3, "local data (TXT record): not supported")]


def test_unsupported_actions_and_triggers_are_reported(tmp_path) -> None:
    text = "\n".join(
        [
            "$ORIGIN rpz.example.",
            "drop.example CNAME rpz-drop.",
            "tcp.example CNAME rpz-tcp-only.",
            "garden.example CNAME walled.garden.example.",
            "local.example A 192.0.2.1",
            "32.1.2.0.192.rpz-ip CNAME .",
            "ns.example.rpz-nsdname CNAME .",
            "outside.example. CNAME .",
            "* CNAME .",
            "$INCLUDE other.zone",
            "bad..name CNAME .",
            "@ CNAME .",
            "kept.example CNAME .",
        ]
    )
    parsed = parse(tmp_path, "rpz", text)
    assert [(e.line, e.value) for e in parsed.entries] == [(13, "kept.example")]
    got = dict(reasons(parsed))
    assert got[2] == "action rpz-drop. not supported"
    assert got[3] == "action rpz-tcp-only. not supported"
    assert got[4].startswith("CNAME to walled.garden.example.")
    assert got[5] == "local data (A record): not supported"
    assert got[6] == "rpz-ip trigger not supported"
    assert got[7] == "rpz-nsdname trigger not supported"
    assert got[8] == "owner outside the zone rpz.example"
    assert got[9].startswith("wildcard for the whole zone")
    assert got[10] == "unsupported directive $INCLUDE"
    assert got[11] == "empty label"
    assert got[12].startswith("trigger on the zone apex")
    assert len(parsed.problems) == 11


def test_unclosed_parenthesis_is_reported(tmp_path) -> None:
    parsed = parse(tmp_path, "rpz", "@ SOA a. b. ( 1 2 3\nx CNAME .\n")
    assert reasons(parsed) == [(1, "unclosed parenthesis")]

"""Hosts files used as blocklists."""

from __future__ import annotations

from filtercore.entries import Kind, Scope
from tests.filtercore.formats_support import parse, reasons, values

STEVENBLACK_HEAD = """\
# Title: StevenBlack/hosts
127.0.0.1 localhost
127.0.0.1 localhost.localdomain
127.0.0.1 local
255.255.255.255 broadcasthost
::1 localhost
::1 ip6-localhost ip6-loopback
fe80::1%lo0 localhost
ff00::0 ip6-localnet
ff02::1 ip6-allnodes
0.0.0.0 0.0.0.0

# Start StevenBlack
0.0.0.0 ads.example.com
0.0.0.0 Tracker.Example.NET  # inline comment
"""


def test_boilerplate_is_ignored_and_blocks_are_kept(tmp_path) -> None:
    parsed = parse(tmp_path, "hosts", STEVENBLACK_HEAD)
    assert values(parsed) == ["ads.example.com", "tracker.example.net"]
    assert [entry.line for entry in parsed.entries] == [14, 15]
    assert all(e.kind is Kind.DOMAIN and e.scope is Scope.SUBTREE for e in parsed.entries)
    # Every boilerplate line (fe80::1%lo0 with a scope id included) is skipped unreported.
    assert parsed.problems == []


def test_several_names_and_sinkhole_addresses(tmp_path) -> None:
    text = "0.0.0.0 a.example b.example\t c.example\n127.0.0.2 d.example\n:: e.example\n"
    parsed = parse(tmp_path, "hosts", text)
    assert values(parsed) == ["a.example", "b.example", "c.example", "d.example", "e.example"]
    assert [entry.line for entry in parsed.entries] == [1, 1, 1, 2, 3]


def test_malformed_lines(tmp_path) -> None:
    text = (
        "example.com 0.0.0.0\n"
        "0.0.0.0\n"
        "192.0.2.7 local-data.example\n"
        "0.0.0.0 good.example bad..name.example\n"
        "0.0.0.0 # nothing but a comment\n"
    )
    parsed = parse(tmp_path, "hosts", text)
    assert values(parsed) == ["good.example"]
    got = reasons(parsed)
    assert got[0] == (1, "first field is not an IP address")
    assert got[1] == (2, "address without a host name")
    assert got[2][0] == 3 and "not a sink hole" in got[2][1]
    assert got[3] == (4, "'bad..name.example': empty label")
    assert got[4] == (5, "address without a host name")
    assert len(got) == 5

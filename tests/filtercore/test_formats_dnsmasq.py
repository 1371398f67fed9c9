"""dnsmasq blocklist directives."""

from __future__ import annotations

from filtercore.entries import Kind, Scope
from tests.filtercore.formats_support import parse, reasons

CONF = """\
# dnsmasq blocklist
address=/ads.example/0.0.0.0
address=/one.example/two.example/#
address=/nx.example/
address=/v6.example/::
server=/srv.example/
local=/local.example/
address=/*.wild.example/0.0.0.0
address=/192.0.2.9/0.0.0.0
"""


def test_block_directives(tmp_path) -> None:
    parsed = parse(tmp_path, "dnsmasq", CONF)
    got = [(e.line, e.kind, e.value, e.scope) for e in parsed.entries]
    assert got == [
        (2, Kind.DOMAIN, "ads.example", Scope.SUBTREE),
        (3, Kind.DOMAIN, "one.example", Scope.SUBTREE),
        (3, Kind.DOMAIN, "two.example", Scope.SUBTREE),
        (4, Kind.DOMAIN, "nx.example", Scope.SUBTREE),
        (5, Kind.DOMAIN, "v6.example", Scope.SUBTREE),
        (6, Kind.DOMAIN, "srv.example", Scope.SUBTREE),
        (7, Kind.DOMAIN, "local.example", Scope.SUBTREE),
        (8, Kind.DOMAIN, "wild.example", Scope.BELOW),
        (9, Kind.IP, "192.0.2.9", Scope.SUBTREE),
    ]
    assert parsed.problems == []


def test_other_directives_are_reported(tmp_path) -> None:
    text = "\n".join(
        [
            "address=/redirect.example/192.0.2.1",
            "server=/fwd.example/192.0.2.53",
            "conf-file=/etc/other.conf",
            "bogus-nxdomain=192.0.2.2",
            "address=/#/0.0.0.0",
            "address=/bad..name/0.0.0.0",
            "address=example.com",
            "address=//0.0.0.0",
            "local=/x.example/y",
        ]
    )
    parsed = parse(tmp_path, "dnsmasq", text)
    assert parsed.entries == []
    got = reasons(parsed)
    assert [line for line, _ in got] == list(range(1, 10))
    assert "not a sink hole" in got[0][1]
    assert "a forwarding rule" in got[1][1]
    assert got[2][1] == "unsupported dnsmasq directive 'conf-file'"
    assert got[3][1] == "unsupported dnsmasq directive 'bogus-nxdomain'"
    assert got[4][1].startswith("/#/ matches every domain")
    assert got[5][1] == "'bad..name': empty label"
    assert got[6][1] == "address= without /domain/ part"
    assert got[7][1] == "no domain between the slashes"
    assert got[8][1].startswith("local= with 'y'")

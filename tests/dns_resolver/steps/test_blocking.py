"""Unit tests for dns_resolver.steps.blocking: one block answer per mode, with EDE."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dns_resolver import edns, wire
from dns_resolver.steps.blocking import Blocker, ede_text
from filtercore.verdict import Action, Verdict

VERDICT = Verdict(Action.BLOCK, category="adult", list="ut1/adult", rule="example.com")


def answer(blocker: Blocker, qtype: str) -> dns.message.Message:
    query = wire.parse_query(dns.message.make_query("WWW.example.com", qtype).to_wire())
    body = blocker.body(query)
    return dns.message.from_wire(body)


def test_nxdomain_has_soa_for_negative_caching() -> None:
    msg = answer(Blocker("nxdomain", ttl=120), "A")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert not msg.answer
    soa = msg.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 120 and soa[0].minimum == 120
    assert soa.name.to_text() == "WWW.example.com."


@pytest.mark.parametrize("qtype", ["A", "MX", "TXT", "HTTPS"])
def test_nodata_for_every_type(qtype: str) -> None:
    msg = answer(Blocker("nodata"), qtype)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and msg.authority


@pytest.mark.parametrize(
    ("mode", "kwargs", "qtype", "expected"),
    [
        ("null", {}, "A", "0.0.0.0"),
        ("null", {}, "AAAA", "::"),
        ("ip", {"ipv4": "192.0.2.80", "ipv6": "2001:db8::80"}, "A", "192.0.2.80"),
        ("ip", {"ipv4": "192.0.2.80", "ipv6": "2001:db8::80"}, "AAAA", "2001:db8::80"),
    ],
)
def test_address_modes(mode: str, kwargs: dict[str, str], qtype: str, expected: str) -> None:
    msg = answer(Blocker(mode, ttl=60, **kwargs), qtype)
    assert msg.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in msg.answer[0]] == [expected]
    assert msg.answer[0].ttl == 60


@pytest.mark.parametrize("mode", ["null", "ip"])
def test_address_modes_answer_nodata_for_other_types(mode: str) -> None:
    msg = answer(Blocker(mode, ipv4="192.0.2.80"), "MX")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and msg.authority
    # ip mode without an IPv6 address: AAAA is NODATA too.
    msg = answer(Blocker("ip", ipv4="192.0.2.80"), "AAAA")
    assert not msg.answer


def test_ede_blocked_and_filtered() -> None:
    blocker = Blocker(filtered_categories=["gambling"])
    option = blocker.ede(VERDICT)
    assert blocker.ede(VERDICT) is option  # memoised
    out = edns.finish(wire.header(1, 0x8180, 0, 0, 0, 0), wire.Edns(1232), limit=None,
                      options=option)
    assert edns.ede_codes(out) == [
        (15, "blocked: category=adult list=ut1/adult rule=example.com")
    ]
    gambling = Verdict(Action.BLOCK, category="gambling", list="l", rule="casino.example")
    code = int.from_bytes(blocker.ede(gambling)[4:6], "big")
    assert code == edns.EDE_FILTERED


def test_ede_text_names_what_inspection_matched() -> None:
    assert ede_text(VERDICT, via="cname=t.example.com").endswith("via=cname=t.example.com")


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="block mode"):
        Blocker("sinkhole")

"""Unit tests for dns_resolver.edns: OPT building, truncation, EDE, error answers."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset

from dns_resolver import edns, wire


def _query(**kwargs: object) -> wire.Query:
    msg = dns.message.make_query("big.example", "TXT", **kwargs)  # type: ignore[arg-type]
    return wire.parse_query(msg.to_wire())


def _body(size: int) -> bytes:
    """An OPT-less answer with TXT data of about `size` bytes."""
    query = dns.message.make_query("big.example", "TXT")
    response = dns.message.make_response(query)
    strings = " ".join(['"' + "x" * 200 + '"'] * (size // 200))
    response.answer.append(dns.rrset.from_text("big.example.", 60, "IN", "TXT", strings))
    return response.to_wire()


def test_udp_limit() -> None:
    assert edns.udp_limit(None) == 512
    assert edns.udp_limit(wire.Edns(4096)) == 1232
    assert edns.udp_limit(wire.Edns(800)) == 800
    assert edns.udp_limit(wire.Edns(100)) == 512


def test_finish_adds_opt_echoing_do() -> None:
    q = _query(use_edns=0, want_dnssec=True)
    out = edns.finish(_body(400), q.edns, limit=1232, options=edns.ede_option(15, "why"))
    msg = dns.message.from_wire(out)
    assert msg.edns == 0 and msg.payload == 1232
    assert msg.ednsflags & 0x8000
    assert edns.ede_codes(out) == [(15, "why")]


def test_finish_truncates_with_tc() -> None:
    q = _query(use_edns=0, payload=1232)
    out = edns.finish(_body(2000), q.edns, limit=1232)
    assert len(out) <= 1232
    msg = dns.message.from_wire(out)
    assert msg.flags & 0x0200 and not msg.answer and msg.edns == 0
    assert msg.question[0].name.to_text() == "big.example."
    # Over TCP there is no limit.
    assert len(edns.finish(_body(2000), q.edns, limit=None)) > 2000


def test_finish_without_edns_uses_512() -> None:
    out = edns.finish(_body(600), None, limit=edns.udp_limit(None))
    assert len(out) <= 512 and out[2] & 0x02


def test_badvers_answer_carries_extended_rcode() -> None:
    out = edns.error_response(1, 0x0100, wire.BADVERS, b"\x00\x00\x01\x00\x01", wire.Edns(1232))
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.BADVERS
    assert edns.extended_rcode(out) == wire.BADVERS


def test_error_response_without_question() -> None:
    out = edns.error_response(9, 0, wire.FORMERR)
    assert len(out) == 12 and out[3] & 0xF == wire.FORMERR and out[2] & 0x80

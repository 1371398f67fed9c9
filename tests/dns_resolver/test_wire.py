"""Unit tests for dns_resolver.wire: byte-level parsing and patching."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.rrset
import pytest

from dns_resolver import wire


def make(name: str = "WWW.Example.COM", qtype: str = "A", **kwargs: object) -> bytes:
    msg = dns.message.make_query(name, qtype, **kwargs)  # type: ignore[arg-type]
    msg.id = 4242
    return msg.to_wire()


def test_parse_query_lowercases_and_keeps_the_raw_question() -> None:
    data = make()
    q = wire.parse_query(data)
    assert (q.id, q.qname, q.qtype, q.qclass) == (4242, "www.example.com", 1, 1)
    assert q.question == data[12 : 12 + len(q.question)]
    assert b"WWW" in q.question
    assert q.edns is None
    assert q.opcode == 0


def test_parse_query_reads_edns() -> None:
    opt = dns.edns.GenericOption(65000, b"\xab\xcd")
    q = wire.parse_query(make(use_edns=0, payload=4096, want_dnssec=True, options=[opt]))
    assert q.edns is not None
    assert (q.edns.version, q.edns.do, q.edns.udp_size) == (0, True, 4096)
    assert q.edns.options == ((65000, b"\xab\xcd"),)
    assert q.do


def test_small_udp_size_counts_as_512() -> None:
    q = wire.parse_query(make(use_edns=0, payload=100))
    assert q.edns is not None and q.edns.udp_size == 512


def test_root_query() -> None:
    q = wire.parse_query(make(".", "NS"))
    assert q.qname == ""


@pytest.mark.parametrize("data", [b"", b"\x00" * 11, b"\x12\x34\x80\x00" + b"\x00" * 8])
def test_garbage_and_responses_are_wire_errors(data: bytes) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.parse_query(data)
    assert not isinstance(info.value, wire.BadQuery)


def test_qdcount_other_than_one_is_formerr() -> None:
    data = bytearray(make())
    data[5] = 2
    with pytest.raises(wire.BadQuery) as info:
        wire.parse_query(bytes(data))
    assert info.value.rcode == wire.FORMERR and info.value.qid == 4242
    with pytest.raises(wire.BadQuery) as info:
        wire.parse_query(struct.pack("!HHHHHH", 7, 0, 0, 0, 0, 0))
    assert info.value.rcode == wire.FORMERR


def test_unknown_opcode_is_notimp() -> None:
    data = bytearray(make())
    data[2] |= 5 << 3  # opcode 5 (UPDATE)
    with pytest.raises(wire.BadQuery) as info:
        wire.parse_query(bytes(data))
    assert info.value.rcode == wire.NOTIMP


def test_truncated_question_is_formerr() -> None:
    data = make()
    with pytest.raises(wire.BadQuery) as info:
        wire.parse_query(data[:20])
    assert info.value.rcode == wire.FORMERR


def test_edns_version_1_is_badvers() -> None:
    with pytest.raises(wire.BadQuery) as info:
        wire.parse_query(make(use_edns=1))
    assert info.value.rcode == wire.BADVERS
    assert info.value.edns is not None and info.value.question


def test_two_opt_records_are_formerr() -> None:
    data = bytearray(make(use_edns=0))
    opt = data[-11:]
    data[11] = 2
    with pytest.raises(wire.BadQuery) as info:
        wire.parse_query(bytes(data + opt))
    assert info.value.rcode == wire.FORMERR


def test_read_name_follows_pointers_and_refuses_loops() -> None:
    data = make("a.b.example")
    name, end = wire.read_name(data, 12)
    assert name == "a.b.example" and end == 12 + len("a.b.example") + 2
    looped = data[:12] + b"\xc0\x0c"
    with pytest.raises(wire.WireError):
        wire.read_name(looped, 12)


def test_walk_records_strip_opt_and_adopt() -> None:
    query = dns.message.make_query("www.example.com", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    data = response.to_wire()
    records = wire.walk_records(data)
    assert [r.rtype for r in records] == [wire.TYPE_A, wire.TYPE_OPT]
    assert wire.read_u32(data, records[0].ttl_offset) == 300
    body, kept = wire.strip_opt(data)
    assert [r.rtype for r in kept] == [wire.TYPE_A]
    assert body[10:12] == b"\x00\x00" and len(body) == records[1].offset
    q = wire.parse_query(make("WwW.eXample.com", use_edns=0))
    adopted = wire.adopt(body, q)
    assert adopted[0:2] == struct.pack("!H", 4242)
    assert adopted[12 : 12 + len(q.question)] == q.question
    assert adopted[3] & 0x80  # RA


def test_encode_name() -> None:
    assert wire.encode_name("example.com.") == b"\x07example\x03com\x00"
    assert wire.encode_name("") == b"\x00"
    with pytest.raises(wire.WireError):
        wire.encode_name("a" * 64 + ".com")


def test_names_with_dots_inside_labels_do_not_collide() -> None:
    """`www.example` + `com` (two labels, one holding a dot) is not www.example.com."""
    plain = make("www.example.com")
    tricky = plain[:12] + b"\x0bwww.example\x03com\x00" + plain[-4:]
    assert wire.parse_query(plain).qname == "www.example.com"
    assert wire.parse_query(tricky).qname == "www\\046example.com"
    odd = plain[:12] + b"\x03A\\\xff\x00" + plain[-4:]
    assert wire.parse_query(odd).qname == "a\\092\\255"
    assert wire.name_text([]) == ""
    assert wire.read_name(tricky, 12)[0] == "www\\046example.com"

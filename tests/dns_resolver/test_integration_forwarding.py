"""Integration: `filterdns serve` as a real process between real clients (dig, kdig,
dnspython) and NSD: pass-through, blocking per mode with EDE, CNAME cloaking, TC and TCP,
EDNS, malformed packets, ACL."""

from __future__ import annotations

import struct
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.rcode
import pytest

from tests.dns_resolver.harness import (
    FaultUpstream,
    ServerProcess,
    TestZone,
    send_raw_tcp,
    send_raw_udp,
)

Z = TestZone
FAST = {"upstream": {"timeout": 0.5}}


@pytest.fixture
def resolver(filterdns_on_nsd: Callable[..., ServerProcess]) -> ServerProcess:
    return filterdns_on_nsd(FAST)


def test_pass_through_with_dig_kdig_and_dnspython(resolver: ServerProcess) -> None:
    r = resolver.dig(Z.WWW, "A")
    assert r.status == "NOERROR" and r.rdata("A") == [Z.WWW_A]
    assert {"qr", "rd", "ra"} <= r.flags and "aa" not in r.flags
    assert resolver.dig(Z.WWW, "AAAA").rdata("AAAA") == [Z.WWW_AAAA]
    chain = resolver.kdig(Z.CHAIN, "A")
    assert chain.status == "NOERROR"
    assert chain.rdata("CNAME") == [Z.ALIAS, Z.WWW] and chain.rdata("A") == [Z.WWW_A]
    assert resolver.kdig(Z.MX, "MX").rdata("MX") == [f"10 {Z.MAIL}"]
    txt = resolver.query(Z.TXT, "TXT")
    assert txt.rcode() == dns.rcode.NOERROR
    assert txt.answer[0][0].strings == (Z.TXT_TEXT.encode(),)
    assert sorted(resolver.dig(Z.MULTI, "A").rdata("A")) == sorted(Z.MULTI_A)
    nodata = resolver.dig(Z.NODATA, "MX")
    assert nodata.status == "NOERROR" and not nodata.answer
    assert [r.rtype for r in nodata.authority] == ["SOA"]
    assert resolver.dig(Z.NXDOMAIN, "A").status == "NXDOMAIN"
    srv = resolver.query(Z.SRV, "SRV", tcp=True)
    assert srv.answer[0][0].port == 5060


def test_block_nxdomain_with_ede_and_cname_cloaking(resolver: ServerProcess) -> None:
    r = resolver.dig(Z.BLOCKED, "A")
    assert r.status == "NXDOMAIN" and not r.answer
    assert [a.rtype for a in r.authority] == ["SOA"]
    assert r.ede == [(15, "blocked: category=adult list=test rule=blocked.filterdns.test")]
    sub = resolver.kdig(Z.BLOCKED_SUB, "MX", "+edns")
    assert sub.status == "NXDOMAIN" and sub.ede and sub.ede[0][0] == 15
    cloak = resolver.dig(Z.CLOAK, "A")
    assert cloak.status == "NXDOMAIN"
    assert "via=cname=tracker.blocked-target.filterdns.test" in cloak.ede_text
    assert "rule=blocked-target.filterdns.test" in cloak.ede_text
    for name, qtype, address in ((Z.BADIP, "A", Z.BADIP_A), (Z.BADIP6, "AAAA", Z.BADIP6_AAAA)):
        bad = resolver.dig(name, qtype)
        assert bad.status == "NXDOMAIN" and f"via=address={address}" in bad.ede_text
    # Allowed answers carry no EDE.
    assert resolver.dig(Z.ALIAS, "A").ede == []


@pytest.mark.parametrize(
    ("mode", "extra", "a", "aaaa", "mx_status"),
    [
        ("nodata", {}, None, None, "NOERROR"),
        ("null", {}, "0.0.0.0", "::", "NOERROR"),
        ("ip", {"ipv4": "192.0.2.80", "ipv6": "2001:db8::80"}, "192.0.2.80", "2001:db8::80",
         "NOERROR"),
    ],
)
def test_block_modes(
    filterdns_on_nsd: Callable[..., ServerProcess],
    mode: str, extra: dict[str, str], a: str | None, aaaa: str | None, mx_status: str,
) -> None:
    server = filterdns_on_nsd({**FAST, "blocking": {"mode": mode, "ttl": 42, **extra}})
    ra = server.dig(Z.BLOCKED, "A")
    assert ra.status == "NOERROR" and ra.ede and ra.ede[0][0] == 15
    assert ra.rdata("A") == ([a] if a else [])
    if a:
        assert ra.answer[0].ttl == 42
    else:
        assert [r.rtype for r in ra.authority] == ["SOA"]
    assert server.kdig(Z.BLOCKED, "AAAA").rdata("AAAA") == ([aaaa] if aaaa else [])
    mx = server.dig(Z.BLOCKED, "MX")
    assert mx.status == mx_status and not mx.answer and mx.authority
    assert "category=adult" in mx.ede_text


def test_block_mode_flag_overrides_config(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd(FAST, ["--block-mode", "null"])
    assert server.dig(Z.BLOCKED, "A").rdata("A") == ["0.0.0.0"]


def test_truncation_and_tcp_retry(resolver: ServerProcess) -> None:
    udp = resolver.dig(Z.BIGTXT, "TXT", "+ignore")
    assert udp.status == "NOERROR" and "tc" in udp.flags and not udp.answer
    small = resolver.dig(Z.TXT, "TXT", "+ignore", "+noedns")
    assert "tc" not in small.flags
    retried = resolver.dig(Z.BIGTXT, "TXT")  # dig retries over TCP by itself
    assert "tc" not in retried.flags
    assert len(retried.answer) == 1 and all(s in retried.answer[0].data for s in Z.BIGTXT_STRINGS)
    tcp = resolver.kdig(Z.BIGTXT, "TXT", "+tcp")
    assert tcp.status == "NOERROR" and len(tcp.answer) == 1
    # Without EDNS the limit is 512 bytes.
    plain = resolver.query(Z.BIGTXT, "TXT", edns=None)
    assert plain.flags & dns.flags.TC


def test_edns_badvers_unknown_option(resolver: ServerProcess) -> None:
    bad = resolver.dig(Z.WWW, "A", "+edns=1", "+noednsneg")
    assert bad.status == "BADVERS" and not bad.answer
    opt = resolver.dig(Z.WWW, "A", "+ednsopt=65000:abcd")
    assert opt.status == "NOERROR" and opt.rdata("A") == [Z.WWW_A]
    assert "65000" not in opt.stdout.split("QUESTION SECTION")[0].split("OPT PSEUDOSECTION")[-1]
    msg = resolver.query(Z.WWW, "A", payload=4096)
    assert msg.payload == 1232 and msg.edns == 0


def test_do_and_cd_bits_passed_upstream(
    start_filterdns: Callable[..., ServerProcess], fault_upstream: FaultUpstream
) -> None:
    server = start_filterdns(FAST, upstreams=[fault_upstream.upstream])
    r = server.dig("signed.example", "A", "+dnssec", "+cd")
    assert r.status == "NOERROR" and "do" in r.stdout.split("OPT PSEUDOSECTION")[1].split("\n")[1]
    sent = fault_upstream.received[-1].dnspython
    assert sent.ednsflags & dns.flags.DO
    assert sent.flags & dns.flags.CD
    plain = server.dig("plain.example", "A")
    assert plain.status == "NOERROR"
    assert not fault_upstream.received[-1].dnspython.ednsflags & dns.flags.DO


def test_malformed_packets(resolver: ServerProcess) -> None:
    two_questions = struct.pack("!HHHHHH", 0x1234, 0x0100, 2, 0, 0, 0) + (
        b"\x03www\x00\x00\x01\x00\x01" * 2
    )
    reply = send_raw_udp(resolver.port, two_questions)
    assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0xF == 1  # FORMERR
    bad_label = struct.pack("!HHHHHH", 0x2222, 0x0100, 1, 0, 0, 0) + b"\x40abc"
    reply = send_raw_udp(resolver.port, bad_label)
    assert reply is not None and reply[3] & 0xF == 1
    update = struct.pack("!HHHHHH", 0x3333, 5 << 11, 1, 0, 0, 0) + b"\x00\x00\x06\x00\x01"
    reply = send_raw_udp(resolver.port, update)
    assert reply is not None and reply[3] & 0xF == 4  # NOTIMP
    assert send_raw_udp(resolver.port, b"\x01\x02\x03", timeout=0.3) is None  # dropped
    reply = send_raw_tcp(resolver.port, two_questions)
    assert reply is not None and reply[3] & 0xF == 1
    # Still serving.
    assert resolver.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]


def test_acl_refuses_excluded_source(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd(
        {**FAST, "access": {"allow": ["127.0.0.0/8", "::1/128"], "deny": ["127.0.0.2/32"]}}
    )
    refused = server.dig(Z.WWW, "A", "-b", "127.0.0.2")
    assert refused.status == "REFUSED" and not refused.answer
    assert server.dig(Z.WWW, "A", "-b", "127.0.0.3").status == "NOERROR"


def test_ipv6_listener(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    from tests.dns_resolver.harness import dig, free_port

    port6 = free_port("::1")
    # IPv4 first: the harness probes readiness on the first listen address from 127.0.0.1.
    listen = [f"127.0.0.1:{free_port()}", f"[::1]:{port6}"]
    server = filterdns_on_nsd({**FAST, "server": {"listen": listen}})
    r = dig("::1", port6, Z.WWW, "AAAA")
    assert r.rdata("AAAA") == [Z.WWW_AAAA]
    assert dig("::1", port6, Z.WWW, "A", "+tcp").rdata("A") == [Z.WWW_A]
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]

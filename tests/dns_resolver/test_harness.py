"""The integration harness itself: NSD serves the test zone, the fault upstream misbehaves
as told, and `start_filterdns` starts, probes and stops a real server."""

from __future__ import annotations

import socket
import struct
import tomllib
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dns_resolver.harness import (
    FAULT_MODES,
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    dig,
    free_port,
    kdig,
    make_query,
    query,
    send_raw_tcp,
    send_raw_udp,
    to_toml,
)


def test_free_port_is_free_for_udp_and_tcp() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", port))


def test_nsd_serves_the_test_zone(nsd_upstream: NsdServer) -> None:
    def ask(name: str, qtype: str = "A", *opts: str):  # noqa: ANN202 - local shorthand
        r = dig(nsd_upstream.address, nsd_upstream.port, name, qtype, *opts)
        assert r.returncode == 0, r.stderr
        return r

    r = ask(TestZone.WWW)
    assert r.status == "NOERROR" and "aa" in r.flags
    assert r.rdata("A") == [TestZone.WWW_A] and r.answer[0].ttl == TestZone.TTL
    assert ask(TestZone.WWW, "AAAA").rdata("AAAA") == [TestZone.WWW_AAAA]
    short = ask(TestZone.SHORT)
    assert short.rdata() == [TestZone.SHORT_A] and short.answer[0].ttl == TestZone.SHORT_TTL
    assert sorted(ask(TestZone.MULTI).rdata("A")) == sorted(TestZone.MULTI_A)
    chain = ask(TestZone.CHAIN)
    assert [rec.rtype for rec in chain.answer] == ["CNAME", "CNAME", "A"]
    assert chain.rdata("A") == [TestZone.WWW_A]
    cloak = ask(TestZone.CLOAK)
    assert cloak.rdata("CNAME") == [TestZone.CLOAK_TARGET]
    assert cloak.rdata("A") == [TestZone.CLOAK_TARGET_A]
    assert ask(TestZone.MX, "MX").rdata() == [f"10 {TestZone.MAIL}"]
    assert ask(TestZone.TXT, "TXT").rdata() == [f'"{TestZone.TXT_TEXT}"']
    assert ask(TestZone.BADIP).rdata() == [TestZone.BADIP_A]
    assert ask(TestZone.BADIP6, "AAAA").rdata() == [TestZone.BADIP6_AAAA]
    assert ask(TestZone.BLOCKED_SUB).rdata() == [TestZone.BLOCKED_A]
    assert ask(TestZone.SRV, "SRV").rdata() == [f"10 5 5060 {TestZone.WWW}"]
    nx = ask(TestZone.NXDOMAIN)
    assert nx.status == "NXDOMAIN" and nx.answer == []
    assert nx.authority[0].rtype == "SOA" and nx.authority[0].ttl == TestZone.NEGATIVE_TTL
    nodata = ask(TestZone.NODATA, "MX")
    assert nodata.status == "NOERROR" and nodata.answer == [] and nodata.authority


def test_the_big_txt_needs_tcp(nsd_upstream: NsdServer) -> None:
    udp = dig(nsd_upstream.address, nsd_upstream.port, TestZone.BIGTXT, "TXT",
              "+bufsize=1232", "+ignore")  # fmt: skip
    assert "tc" in udp.flags and udp.answer == []
    tcp = dig(nsd_upstream.address, nsd_upstream.port, TestZone.BIGTXT, "TXT", "+tcp")
    assert "tc" not in tcp.flags
    strings = tcp.rdata("TXT")[0]
    assert all(s in strings for s in TestZone.BIGTXT_STRINGS)
    reply = query(nsd_upstream.port, TestZone.BIGTXT, "TXT", tcp=True)
    assert len(reply.to_wire()) > 2000


def test_kdig_and_dnspython_clients(nsd_upstream: NsdServer) -> None:
    r = kdig(nsd_upstream.address, nsd_upstream.port, TestZone.WWW, "AAAA")
    assert r.status == "NOERROR" and r.rdata("AAAA") == [TestZone.WWW_AAAA]
    assert {"qr", "aa"} <= r.flags
    reply = query(nsd_upstream.port, TestZone.WWW)
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rd.address for rd in reply.answer[0]] == [TestZone.WWW_A]
    raw = send_raw_udp(nsd_upstream.port, make_query(TestZone.WWW).to_wire())
    assert raw is not None and dns.message.from_wire(raw).answer
    raw = send_raw_tcp(nsd_upstream.port, make_query(TestZone.WWW).to_wire())
    assert raw is not None and dns.message.from_wire(raw).answer


def test_a_queried_server_that_is_down_gives_no_status(fresh_nsd: NsdServer) -> None:
    assert dig(fresh_nsd.address, fresh_nsd.port, TestZone.WWW).status == "NOERROR"
    fresh_nsd.stop()
    down = dig(fresh_nsd.address, fresh_nsd.port, TestZone.WWW)
    assert down.status is None and down.returncode != 0
    fresh_nsd.start()
    assert dig(fresh_nsd.address, fresh_nsd.port, TestZone.WWW).rdata() == [TestZone.WWW_A]


def _udp_exchange(port: int, wire: bytes) -> tuple[bytes | None, int | None]:
    """Send one query; return the reply and the port it came from (None, None if silent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        s.sendto(wire, ("127.0.0.1", port))
        try:
            data, peer = s.recvfrom(65535)
        except TimeoutError:
            return None, None
        return data, peer[1]


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_fault_upstream_modes(fault_upstream: FaultUpstream, mode: str) -> None:
    fault_upstream.mode = mode
    q = make_query("x.example", "A")
    data, source_port = _udp_exchange(fault_upstream.port, q.to_wire())
    assert fault_upstream.count == 1 and fault_upstream.count_of("udp") == 1
    assert fault_upstream.received[0].qname == "x.example."
    assert fault_upstream.received[0].qtype == "A"
    if mode == "timeout":
        assert data is None
        return
    assert data is not None
    if mode == "garbage":
        with pytest.raises(dns.exception.DNSException):
            r = dns.message.from_wire(data)
            assert r.id == q.id and r.question == q.question  # random bytes rarely parse
        return
    reply = dns.message.from_wire(data)
    assert (source_port == fault_upstream.port) == (mode != "wrong_source")
    assert (reply.id == q.id) == (mode != "wrong_id")
    assert (reply.question == q.question) == (mode != "wrong_question")
    expected_rcode = {"servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED}
    assert reply.rcode() == expected_rcode.get(mode, dns.rcode.NOERROR)
    assert bool(reply.flags & dns.flags.TC) == (mode == "truncate")
    has_answer = mode in ("ok", "wrong_id", "wrong_question", "wrong_source")
    assert bool(reply.answer) == has_answer
    assert reply.edns == 0  # the OPT is echoed


def test_fault_upstream_truncates_udp_but_answers_tcp(fault_upstream: FaultUpstream) -> None:
    fault_upstream.mode = "truncate"
    full = query(fault_upstream.port, "x.example", "A", tcp=True)
    assert not full.flags & dns.flags.TC
    assert [rd.address for rd in full.answer[0]] == [fault_upstream.answer_ip]
    assert fault_upstream.count_of("tcp") == 1


def test_fault_upstream_records_edns_flags(fault_upstream: FaultUpstream) -> None:
    query(fault_upstream.port, "x.example", "A", dnssec=True, cd=True, payload=1400)
    seen = fault_upstream.received[0].dnspython
    assert seen.ednsflags & dns.flags.DO and seen.flags & dns.flags.CD
    assert seen.payload == 1400
    fault_upstream.reset()
    assert fault_upstream.count == 0


def test_fault_upstream_timeout_over_tcp(fault_upstream: FaultUpstream) -> None:
    fault_upstream.mode = "timeout"
    assert send_raw_tcp(fault_upstream.port, make_query("x.example").to_wire(), timeout=0.5) is None


def test_fault_upstream_delay_and_factory(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    slow = make_fault_upstream(delay=0.3, answer_ip="192.0.2.7")
    reply = query(slow.port, "x.example", timeout=2)
    assert [rd.address for rd in reply.answer[0]] == ["192.0.2.7"]
    with pytest.raises(dns.exception.Timeout):
        query(slow.port, "y.example", timeout=0.1)
    with pytest.raises(ValueError):
        make_fault_upstream(mode="sulk")


def test_to_toml_round_trips() -> None:
    data = {
        "server": {"listen": ["127.0.0.1:1", "[::1]:2"], "udp_payload_size": 1232},
        "cache": {"enabled": False, "prefetch_threshold": 0.25},
        "querylog": {"path": 'we"ird\\path'},
        "lists": [{"path": "/a", "category": "adult"}, {"path": "/b", "action": "allow"}],
    }
    assert tomllib.loads(to_toml(data)) == data


def test_start_filterdns_answers_and_stops_cleanly(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd()
    assert server.running() and server.metrics_port is not None
    assert server.dig(TestZone.WWW).rdata("A") == [TestZone.WWW_A]
    blocked = server.dig(TestZone.BLOCKED)
    assert blocked.status == "NXDOMAIN" and blocked.ede and blocked.ede[0][0] == 15
    assert server.metric("filterdns_queries_total", qtype="A", result="allowed") >= 1
    assert server.stop() == 0


def test_start_filterdns_reports_a_failed_start(
    start_filterdns: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as info:
        start_filterdns({"upstream": {"servers": ["127.0.0.1:9"]}, "bogus": {"key": 1}},
                        ready_timeout=10)  # fmt: skip
    message = str(info.value)
    assert "exited with status" in message
    assert "bogus" in message  # the server's own stderr is in the failure


def test_probe_is_a_header_only_query(nsd_upstream: NsdServer) -> None:
    # The readiness probe: a bare header with QDCOUNT=0 gets an answer without a question.
    reply = send_raw_udp(nsd_upstream.port, struct.pack("!HHHHHH", 4242, 0, 0, 0, 0, 0))
    assert reply is not None and struct.unpack("!H", reply[:2])[0] == 4242


def test_ipv6_fault_upstream_and_raw_client(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    v6 = make_fault_upstream(address="::1")
    assert v6.upstream == f"[::1]:{v6.port}"
    raw = send_raw_udp(v6.port, make_query("x.example").to_wire(), host="::1")
    assert raw is not None and dns.message.from_wire(raw).answer
    raw = send_raw_tcp(v6.port, make_query("x.example").to_wire(), host="::1")
    assert raw is not None and dns.message.from_wire(raw).answer
    # An IPv6 source alone implies an IPv6 destination.
    assert send_raw_udp(v6.port, make_query("y.example").to_wire(), source="::1") is not None
    assert v6.count == 3

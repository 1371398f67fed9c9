"""Misses forwarded from the C fast path (fastforward.py, `FastPath.set_upstream`).

The answers C forwards must be the Python chain's answers byte for byte; what C does not
finish (blocks found by inspection) must come out as Python makes it; the upstream sees
random IDs and source ports that change; the Python cache sees what C cached.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dns_resolver.fast import fastpath
from dns_resolver.upstreams import fastforward
from filtercore import ListSpec, Matcher
from tests.dns_resolver.harness import (
    FaultUpstream,
    InProcessServer,
    NsdServer,
    TestZone,
    query,
    write_list,
)

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="fast path not built")

Z = TestZone


@pytest.fixture
def matcher(tmp_path: Path) -> Matcher:
    listfile = write_list(tmp_path, Z.BLOCKLIST, "block.txt")
    return Matcher.from_lists([ListSpec(str(listfile), category="adult", name="test")])


def _raw(port: int, name: str, rdtype: str, *, edns: int | None = 0, payload: int = 1232,
         do: bool = False, rd: bool = True, qid: int = 0x1234) -> bytes:
    msg = dns.message.make_query(name, rdtype, use_edns=edns if edns is not None else False,
                                 payload=payload, want_dnssec=do)
    msg.id = qid
    if not rd:
        msg.flags &= ~dns.flags.RD
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3.0)
        s.sendto(msg.to_wire(), ("127.0.0.1", port))
        return s.recv(65535)


# (name, type, query options): one of each record shape C must walk and cache.
CASES = [
    (Z.WWW, "A", {}),
    (Z.WWW, "AAAA", {"do": True}),
    ("WwW.FilterDns.TEST.", "TXT", {"edns": None}),  # 0x20 case, no EDNS: NODATA
    (Z.MULTI, "A", {"rd": False}),
    (Z.ALIAS, "A", {}),
    (Z.CHAIN, "A", {"payload": 4096}),
    (Z.MX, "MX", {}),
    (Z.TXT, "TXT", {}),
    (Z.NXDOMAIN, "A", {}),
    (Z.NODATA, "MX", {"edns": None}),
    (Z.SRV, "SRV", {}),
    (Z.SHORT, "A", {}),
    ("odd+name.filterdns.test.", "A", {}),  # not a host name: nothing a list names
]


@pytest.fixture
def both(matcher: Matcher, nsd_upstream: NsdServer) -> Iterator[tuple[int, object, int]]:
    with InProcessServer(matcher, [nsd_upstream.upstream]) as (fast_port, fast), \
            InProcessServer(matcher, [nsd_upstream.upstream], fast_path=False) as (port, _):
        yield fast_port, fast, port


def test_forwarded_answers_equal_the_python_chain(both: tuple[int, object, int]) -> None:
    fast_port, fast, python_port = both
    fp = fast.fast.fp  # type: ignore[attr-defined]
    for name, rdtype, options in CASES:
        before = fp.fast_answers
        ours = _raw(fast_port, name, rdtype, **options)  # type: ignore[arg-type]
        theirs = _raw(python_port, name, rdtype, **options)  # type: ignore[arg-type]
        assert fp.fast_answers == before + 1, (name, rdtype)  # forwarded and answered in C
        assert ours == theirs, (name, rdtype, options)
    assert fast.fast.fallbacks["miss"] == 0  # type: ignore[attr-defined]
    # Cached by C: the next round is a cache hit with the same records.
    hits = fp.counters(reset=False)["cache_hits"]
    for name, rdtype, options in CASES:
        again = dns.message.from_wire(_raw(fast_port, name, rdtype, **options))  # type: ignore[arg-type]
        first = dns.message.from_wire(_raw(python_port, name, rdtype, **options))  # type: ignore[arg-type]
        assert again.rcode() == first.rcode()
        # The same records; TTLs age by whole seconds, so they are left out.
        assert [(r.name, r.rdtype, sorted(map(str, r))) for r in again.answer] == [
            (r.name, r.rdtype, sorted(map(str, r))) for r in first.answer
        ]
    assert fp.counters(reset=False)["cache_hits"] == hits + len(CASES)


def test_negative_answers_live_for_the_soa_minimum(both: tuple[int, object, int]) -> None:
    fast_port, _, _ = both
    first = dns.message.from_wire(_raw(fast_port, Z.NXDOMAIN, "A"))
    assert first.rcode() == dns.rcode.NXDOMAIN
    assert first.authority[0].ttl == Z.NEGATIVE_TTL  # min(SOA TTL, MINIMUM)
    second = dns.message.from_wire(_raw(fast_port, Z.NXDOMAIN, "A"))
    assert second.rcode() == dns.rcode.NXDOMAIN and second.authority[0].ttl <= Z.NEGATIVE_TTL


def test_blocks_found_in_answers_are_finished_by_python(
    both: tuple[int, object, int],
) -> None:
    fast_port, fast, python_port = both
    fallbacks = fast.fast.fallbacks  # type: ignore[attr-defined]
    for name, rdtype, via in ((Z.CLOAK, "A", "cname=" + Z.CLOAK_TARGET.rstrip(".")),
                              (Z.BADIP, "A", "address=" + Z.BADIP_A),
                              (Z.BADIP6, "AAAA", "address=" + Z.BADIP6_AAAA)):
        handed = fallbacks["answer"]
        ours = _raw(fast_port, name, rdtype)
        assert fallbacks["answer"] == handed + 1, name
        assert ours == _raw(python_port, name, rdtype), name
        reply = dns.message.from_wire(ours)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert via in reply.options[0].text  # type: ignore[attr-defined]
        # Python cached the block; C answers it from then on, with the same EDE.
        assert _raw(fast_port, name, rdtype, qid=0x4321)[2:] == ours[2:]
        assert fallbacks["answer"] == handed + 1


def test_upstream_sees_random_ids_and_rotating_source_ports(
    matcher: Matcher, make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    up = make_fault_upstream()
    with InProcessServer(matcher, [up.upstream]) as (port, server):
        deadline = time.monotonic() + 2.5 * fastforward.ROTATE_SECONDS
        n = 0
        while time.monotonic() < deadline:
            assert query(port, f"n{n}.example", "A").rcode() == dns.rcode.NOERROR
            n += 1
            time.sleep(0.02)
        fallbacks = dict(server.fast.fallbacks)
    udp = [q for q in up.received if q.protocol == "udp"]
    assert len(udp) == n and fallbacks["miss"] == 0
    ports = {q.peer[1] for q in udp if q.peer is not None}
    # POOL_SIZE sockets at first, one more per rotation.
    assert len(ports) >= fastforward.POOL_SIZE + 2
    ids = [int.from_bytes(q.wire[:2], "big") for q in udp]
    assert len(set(ids)) >= n - 2  # 16 random bits: a repeat or two at most


def test_tcp_queries_use_what_c_cached(
    matcher: Matcher, make_fault_upstream: Callable[..., FaultUpstream]
) -> None:
    up = make_fault_upstream()
    with InProcessServer(matcher, [up.upstream]) as (port, _):
        assert query(port, "cached-by-c.example", "A").rcode() == dns.rcode.NOERROR
        over_tcp = query(port, "cached-by-c.example", "A", tcp=True)
        assert over_tcp.answer[0][0].address == up.answer_ip
    assert up.count == 1  # the TCP answer came from the cache C filled


def test_one_timed_out_upstream_is_asked_once(
    matcher: Matcher, make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    up = make_fault_upstream(mode="timeout")
    with InProcessServer(matcher, [up.upstream], timeout=0.3) as (port, server):
        reply = query(port, "silent.example", "A", timeout=3.0)
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert server.fast.fallbacks["timeout"] == 1
        metrics = server.resolver.metrics
        samples = metrics.upstream_errors.collect()[0].samples
        # Its response time counts C's wait for the upstream, not only Python's part.
        assert metrics.registry.get_sample_value("filterdns_response_seconds_sum") >= 0.3
    assert up.count_of("udp") == 1  # C's attempt; Python did not ask the same one again
    assert any(s.labels.get("kind") == "timeout" and s.value == 1 for s in samples)


@pytest.fixture
def text_rules(tmp_path: Path, nsd_upstream: NsdServer) -> Iterator[tuple[int, object, int]]:
    """A fast and a Python server whose lists are text rules only: an expression that
    blocks `multi.` and any `tracker` (the cloaked CNAME's target), a keyword that blocks
    the `txt` label, and one whose exception (`@@short`) cancels it in `short.`."""
    expressions = tmp_path / "expressions"
    expressions.write_text("^multi\\.\ntracker\n")
    keywords = tmp_path / "keywords"
    keywords.write_text("txt$label\nshor$substring\n@@short\n")
    matcher = Matcher.from_lists([
        ListSpec(str(expressions), category="adult", name="expr", format="expressions"),
        ListSpec(str(keywords), category="adult", name="words", format="keywords"),
    ])
    with InProcessServer(matcher, [nsd_upstream.upstream]) as (fast_port, fast), \
            InProcessServer(matcher, [nsd_upstream.upstream], fast_path=False) as (port, _):
        yield fast_port, fast, port


def test_text_rules_let_unlisted_misses_be_forwarded_from_c(
    text_rules: tuple[int, object, int],
) -> None:
    fast_port, fast, python_port = text_rules
    fp = fast.fast.fp  # type: ignore[attr-defined]
    fallbacks = fast.fast.fallbacks  # type: ignore[attr-defined]
    # No rule applies: forwarded from C once the rules passed the name.
    for name, rdtype, options in CASES:
        if name in (Z.MULTI, Z.TXT):
            continue
        before = fp.fast_answers
        assert _raw(fast_port, name, rdtype, **options) == _raw(  # type: ignore[arg-type]
            python_port, name, rdtype, **options)  # type: ignore[arg-type]
        assert fp.fast_answers == before + 1, name
    assert fallbacks["miss"] == 0
    # A rule blocks: Python makes the verdict and its answer.
    for name, rcode in ((Z.MULTI, dns.rcode.NXDOMAIN), (Z.TXT, dns.rcode.NXDOMAIN)):
        handed = fallbacks["miss"]
        ours = _raw(fast_port, name, "A")
        assert fallbacks["miss"] == handed + 1, name
        assert ours == _raw(python_port, name, "A"), name
        assert dns.message.from_wire(ours).rcode() == rcode
    assert "multi" in str(dns.message.from_wire(_raw(fast_port, Z.MULTI, "A")).options[0])
    # The rules ran on the CNAME targets too (alias and chain passed above): the cloaked
    # name's target matches, so Python blocks the answer, as it would have.
    handed = fallbacks["answer"]
    ours = _raw(fast_port, Z.CLOAK, "A")
    assert fallbacks["answer"] == handed + 1
    assert ours == _raw(python_port, Z.CLOAK, "A")
    reply = dns.message.from_wire(ours)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert "cname=" + Z.CLOAK_TARGET.rstrip(".") in str(reply.options[0])

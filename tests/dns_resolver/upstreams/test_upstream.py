"""Unit tests for dns_resolver.upstreams.upstream against the fault-injecting upstream."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest

from dns_resolver import wire
from dns_resolver.upstreams.upstream import Forwarder, build_query, matches
from tests.dns_resolver.harness import FaultUpstream, free_port


class Events:
    """Records what the forwarder reports, like `Metrics` would."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, float | None]] = []
        self.errors: list[tuple[str, str]] = []
        self.health: list[tuple[str, bool]] = []

    def upstream_query(self, upstream: str, seconds: float | None = None) -> None:
        self.queries.append((upstream, seconds))

    def upstream_error(self, upstream: str, kind: str) -> None:
        self.errors.append((upstream, kind))

    def upstream_healthy(self, upstream: str, healthy: bool) -> None:
        self.health.append((upstream, healthy))


def client_query(name: str = "www.example.com", **kwargs: object) -> wire.Query:
    msg = dns.message.make_query(name, "A", **kwargs)  # type: ignore[arg-type]
    return wire.parse_query(msg.to_wire())


def forwarder(*ups: FaultUpstream | tuple[str, int], events: Events | None = None,
              **kwargs: object) -> Forwarder:
    servers = [(u.address, u.port) if isinstance(u, FaultUpstream) else u for u in ups]
    kwargs.setdefault("timeout", 0.3)
    return Forwarder(servers, observer=events, **kwargs)  # type: ignore[arg-type]


def run(fwd: Forwarder, query: wire.Query) -> bytes | None:
    return asyncio.run(fwd.resolve(query))


def test_build_query_and_matches() -> None:
    opt = dns.edns.GenericOption(65000, b"\xab")
    q = client_query(use_edns=0, want_dnssec=True, options=[opt])
    out = build_query(q, 1234, 1232)
    msg = dns.message.from_wire(out)
    assert msg.id == 1234 and msg.ednsflags & 0x8000 and msg.payload == 1232
    assert not msg.options  # client options are hop-by-hop
    reply = dns.message.make_response(msg).to_wire()
    assert matches(reply, 1234, q.question)
    assert not matches(reply, 1235, q.question)
    assert not matches(out, 1234, q.question)  # not a response


def test_ok_answer_with_random_ids_and_flags_forwarded(fault_upstream: FaultUpstream) -> None:
    fwd = forwarder(fault_upstream)
    q = client_query(use_edns=0, want_dnssec=True)
    for _ in range(5):
        answer = run(fwd, q)
        assert answer is not None
        assert dns.message.from_wire(answer).answer[0][0].to_text() == "192.0.2.53"
    ids = {r.dnspython.id for r in fault_upstream.received}
    assert len(ids) >= 4  # a fresh random ID per upstream query
    first = fault_upstream.received[0].dnspython
    assert first.ednsflags & 0x8000  # DO passed upstream


def test_cd_bit_passed_upstream(fault_upstream: FaultUpstream) -> None:
    msg = dns.message.make_query("www.example.com", "A", use_edns=0)
    msg.flags |= dns.flags.CD
    run(forwarder(fault_upstream), wire.parse_query(msg.to_wire()))
    assert fault_upstream.received[0].dnspython.flags & dns.flags.CD


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("wrong_id", "spoofed"), ("wrong_question", "spoofed"), ("garbage", "garbage"),
     ("timeout", "timeout"), ("servfail", "servfail"), ("refused", "refused")],
)
def test_bad_answers_are_discarded_and_failover_works(
    make_fault_upstream: Callable[..., FaultUpstream], mode: str, kind: str
) -> None:
    bad = make_fault_upstream(mode=mode)
    good = make_fault_upstream(answer_ip="192.0.2.200")
    events = Events()
    fwd = forwarder(bad, good, events=events)
    answer = run(fwd, client_query())
    assert answer is not None
    assert dns.message.from_wire(answer).answer[0][0].to_text() == "192.0.2.200"
    assert (bad.upstream, kind) in events.errors
    assert good.count == 1
    # Alone, the bad upstream gives nothing.
    assert run(forwarder(bad), client_query()) is None


def test_wrong_source_is_discarded(make_fault_upstream: Callable[..., FaultUpstream]) -> None:
    bad = make_fault_upstream(mode="wrong_source")
    assert run(forwarder(bad), client_query()) is None


def test_spoofed_answer_first_then_the_real_one_is_accepted() -> None:
    """A spoofed datagram does not end the wait: the genuine answer after it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)

    def serve() -> None:
        data, addr = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        spoof = dns.message.make_response(query)
        spoof.id = (query.id + 1) % 65536
        sock.sendto(spoof.to_wire(), addr)
        sock.sendto(b"\xff" * 5, addr)
        real = dns.message.make_response(query)
        real.answer.append(dns.rrset.from_text("www.example.com.", 5, "IN", "A", "192.0.2.9"))
        sock.sendto(real.to_wire(), addr)

    thread = threading.Thread(target=serve)
    thread.start()
    events = Events()
    try:
        answer = run(forwarder(sock.getsockname(), events=events, timeout=1.0), client_query())
    finally:
        thread.join()
        sock.close()
    assert answer is not None
    assert dns.message.from_wire(answer).answer[0][0].to_text() == "192.0.2.9"
    assert [k for _, k in events.errors] == ["spoofed", "garbage"]


def test_truncated_udp_answer_is_retried_over_tcp(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    up = make_fault_upstream(mode="truncate")
    answer = run(forwarder(up), client_query())
    assert answer is not None
    assert not dns.message.from_wire(answer).flags & dns.flags.TC
    assert up.count_of("udp") == 1 and up.count_of("tcp") == 1


def test_closed_port_fails_fast() -> None:
    port = free_port()
    started = time.monotonic()
    assert run(forwarder(("127.0.0.1", port), timeout=2.0), client_query()) is None
    assert time.monotonic() - started < 1.0


def test_dead_upstream_is_skipped_then_retried(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    bad = make_fault_upstream(mode="servfail")
    good = make_fault_upstream()
    events = Events()
    fwd = forwarder(bad, good, events=events, max_failures=2, retry_dead_after=0.5)

    async def scenario() -> None:
        for _ in range(4):
            assert await fwd.resolve(client_query()) is not None
        assert bad.count == 2  # dead after 2 failures, then skipped
        assert (bad.upstream, False) in events.health
        await asyncio.sleep(0.6)
        bad.mode = "ok"
        assert await fwd.resolve(client_query()) is not None
        assert bad.count == 3
        assert (bad.upstream, True) in events.health

    asyncio.run(scenario())


def test_all_dead_still_tried(make_fault_upstream: Callable[..., FaultUpstream]) -> None:
    up = make_fault_upstream(mode="servfail")
    fwd = forwarder(up, max_failures=1, retry_dead_after=60)
    assert run(fwd, client_query()) is None
    up.mode = "ok"
    assert run(fwd, client_query()) is not None


def test_parallel_takes_the_first_good_answer(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    slow = make_fault_upstream(delay=0.8, answer_ip="192.0.2.1")
    broken = make_fault_upstream(mode="servfail")
    fast = make_fault_upstream(answer_ip="192.0.2.2")
    fwd = forwarder(slow, broken, fast, strategy="parallel", timeout=2.0)
    started = time.monotonic()
    answer = run(fwd, client_query())
    assert time.monotonic() - started < 0.7
    assert answer is not None
    assert dns.message.from_wire(answer).answer[0][0].to_text() == "192.0.2.2"


def test_ipv6_upstream(make_fault_upstream: Callable[..., FaultUpstream]) -> None:
    up = make_fault_upstream(address="::1", mode="truncate")
    fwd = forwarder(up)
    assert fwd.upstreams[0].name == f"[::1]:{up.port}"
    answer = run(fwd, client_query())
    assert answer is not None and up.count_of("tcp") == 1

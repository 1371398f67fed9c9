"""Unit tests for dns_resolver.transports.server: listeners, TCP framing, robustness."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from dns_resolver.resolver import Resolver
from dns_resolver.steps.cache import Cache
from dns_resolver.transports.server import DnsServer
from dns_resolver.upstreams.upstream import Forwarder
from tests.dns_resolver.fakes import FakeMatcher
from tests.dns_resolver.harness import FaultUpstream


class Exploding(FakeMatcher):
    def check(self, name: str):  # type: ignore[no-untyped-def]
        if name.startswith("boom"):
            raise RuntimeError("matcher bug")
        return super().check(name)


async def serving(up: FaultUpstream, hosts: tuple[str, ...] = ("127.0.0.1",),
                  idle: float = 0.3) -> DnsServer:
    resolver = Resolver(
        Exploding(domains={"blocked.example": "adult"}),
        Forwarder([(up.address, up.port)], timeout=1.0),
        cache=Cache(),
    )
    server = DnsServer(resolver, [(h, 0) for h in hosts], tcp_idle_timeout=idle)
    await server.start()
    return server


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_udp_and_tcp_on_ipv4_and_ipv6(
    fault_upstream: FaultUpstream, loop: asyncio.AbstractEventLoop
) -> None:
    server = loop.run_until_complete(serving(fault_upstream, ("127.0.0.1", "::1")))
    try:
        for host, port in server.addresses:
            query = dns.message.make_query("www.example.com", "A")
            udp = loop.run_until_complete(
                loop.run_in_executor(None, lambda h=host, p=port, m=query: dns.query.udp(
                    m, h, port=p, timeout=2))
            )
            assert udp.answer[0][0].to_text() == "192.0.2.53"
            tcp = loop.run_until_complete(
                loop.run_in_executor(None, lambda h=host, p=port, m=query: dns.query.tcp(
                    m, h, port=p, timeout=2))
            )
            assert tcp.answer[0][0].to_text() == "192.0.2.53"
    finally:
        loop.run_until_complete(server.stop())


def test_garbage_and_handler_errors_do_not_kill_the_server(
    fault_upstream: FaultUpstream, loop: asyncio.AbstractEventLoop
) -> None:
    server = loop.run_until_complete(serving(fault_upstream))
    host, port = server.addresses[0]

    def client() -> list[object]:
        results: list[object] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            for payload in (b"\xff", b"\x00" * 5 + b"\xff" * 30):
                s.sendto(payload, (host, port))
            try:
                results.append(s.recv(512))
            except TimeoutError:
                results.append(None)
        results.append(dns.query.udp(dns.message.make_query("boom.example", "A"), host,
                                     port=port, timeout=2).rcode())
        results.append(dns.query.udp(dns.message.make_query("www.example", "A"), host,
                                     port=port, timeout=2).rcode())
        return results

    try:
        first, boom, ok = loop.run_until_complete(loop.run_in_executor(None, client))
    finally:
        loop.run_until_complete(server.stop())
    # The short datagram is dropped; the second has a header and gets FORMERR or nothing.
    assert first is None or first[3] & 0xF == 1  # type: ignore[index]
    assert boom == dns.rcode.SERVFAIL
    assert ok == dns.rcode.NOERROR


def test_tcp_many_queries_per_connection_and_idle_timeout(
    fault_upstream: FaultUpstream, loop: asyncio.AbstractEventLoop
) -> None:
    server = loop.run_until_complete(serving(fault_upstream, idle=0.3))
    host, port = server.addresses[0]

    def client() -> tuple[list[int], bytes]:
        ids = []
        with socket.create_connection((host, port), timeout=2) as s:
            for i, name in enumerate(["a.example", "blocked.example", "b.example"]):
                msg = dns.message.make_query(name, "A")
                msg.id = 100 + i
                data = msg.to_wire()
                s.sendall(struct.pack("!H", len(data)) + data)
                length = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
                reply = dns.message.from_wire(s.recv(length, socket.MSG_WAITALL))
                ids.append(reply.id)
            # Idle past the timeout: the server closes the connection.
            return ids, s.recv(2)

    try:
        ids, tail = loop.run_until_complete(loop.run_in_executor(None, client))
    finally:
        loop.run_until_complete(server.stop())
    assert ids == [100, 101, 102]
    assert tail == b""


def test_port_in_use_is_an_error_naming_it(
    fault_upstream: FaultUpstream, loop: asyncio.AbstractEventLoop
) -> None:
    resolver = Resolver(FakeMatcher(), Forwarder([(fault_upstream.address, fault_upstream.port)]))
    server = DnsServer(resolver, [(fault_upstream.address, fault_upstream.port)])
    with pytest.raises(OSError, match=f"127.0.0.1:{fault_upstream.port}"):
        loop.run_until_complete(server.start())


def test_tcp_pipelined_queries_answered_out_of_order(
    make_fault_upstream: Callable[..., FaultUpstream], loop: asyncio.AbstractEventLoop
) -> None:
    """A slow upstream query does not hold back a blocked name sent after it."""
    slow = make_fault_upstream(delay=0.5)
    server = loop.run_until_complete(serving(slow))
    host, port = server.addresses[0]

    def client() -> list[int]:
        order = []
        with socket.create_connection((host, port), timeout=3) as s:
            for qid, name in ((1, "slow.example"), (2, "blocked.example")):
                msg = dns.message.make_query(name, "A")
                msg.id = qid
                data = msg.to_wire()
                s.sendall(struct.pack("!H", len(data)) + data)
            for _ in range(2):
                length = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
                order.append(dns.message.from_wire(s.recv(length, socket.MSG_WAITALL)).id)
        return order

    try:
        order = loop.run_until_complete(loop.run_in_executor(None, client))
    finally:
        loop.run_until_complete(server.stop())
    assert order == [2, 1]

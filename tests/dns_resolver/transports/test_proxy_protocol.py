"""The PROXY protocol parser (v1, v2) with hand-built headers, `read_header` on a real
asyncio stream, and the plain TCP listener taking or refusing headers (in-process)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_resolver.resolver import Resolver
from dns_resolver.steps.acl import Acl
from dns_resolver.steps.cache import Cache
from dns_resolver.transports.proxy_protocol import (
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    ProxyTruncated,
    parse,
    read_header,
    trusted,
)
from dns_resolver.transports.server import DnsServer
from dns_resolver.upstreams.upstream import Forwarder
from tests.dns_resolver.fakes import FakeMatcher
from tests.dns_resolver.harness import FaultUpstream, _recv_exact


def v2(command: int = 1, family: int = 0x11, body: bytes | None = None,
       version: int = 2) -> bytes:
    """A v2 header: `family` is the family/protocol byte (0x11 TCP over IPv4)."""
    if body is None:
        body = _tcp4("198.51.100.7", "192.0.2.1", 40000, 853)
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack(
        "!H", len(body)) + body


def _tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport))


def _tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport))


# -- the parser ------------------------------------------------------------------------


def test_v2_tcp4() -> None:
    header = parse(v2() + b"\x00\x1d rest of the stream")
    assert header == ProxyHeader(2, "PROXY", ("198.51.100.7", 40000), ("192.0.2.1", 853), 28)


def test_v2_tcp6_with_tlvs_after_the_addresses() -> None:
    tlv = b"\x02\x00\x0fdns.example.org"  # PP2_TYPE_AUTHORITY: skipped
    body = _tcp6("2001:db8::7", "2001:db8::1", 1234, 53) + tlv
    header = parse(v2(family=0x21, body=body))
    assert header.source == ("2001:db8::7", 1234)
    assert header.destination == ("2001:db8::1", 53)
    assert header.length == 16 + 36 + len(tlv)


def test_v2_local_and_unspec_and_unix_carry_no_address() -> None:
    assert parse(v2(command=0, family=0x00, body=b"")) == ProxyHeader(2, "LOCAL", None, None, 16)
    # LOCAL ignores whatever addresses follow.
    assert parse(v2(command=0)).source is None
    assert parse(v2(family=0x00, body=b"")).command == "PROXY"
    assert parse(v2(family=0x00, body=b"")).source is None
    assert parse(v2(family=0x31, body=b"\x00" * 216)).source is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (v2(version=1), "version 1"),
        (v2(command=2), "unknown command 2"),
        (v2(family=0x41), "unknown family/protocol 0x41"),
        (v2(family=0x13), "unknown family/protocol 0x13"),
        (v2(family=0x21), "too short for its family: 12 of 36"),
        (v2(body=b"\x01\x02\x03"), "too short for its family: 3 of 12"),
        (b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x00", "no PROXY header signature"),
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 40000\r\n", "expected `PROXY TCP4|TCP6"),
        (b"PROXY TCP5 198.51.100.7 192.0.2.1 40000 53\r\n", "expected `PROXY TCP4|TCP6"),
        (b"PROXY TCP4 2001:db8::7 192.0.2.1 40000 53\r\n", "not an IPv4 address"),
        (b"PROXY TCP6 198.51.100.7 2001:db8::1 40000 53\r\n", "not an IPv6 address"),
        (b"PROXY TCP4 198.51.100.x 192.0.2.1 40000 53\r\n", "is not an IP address"),
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 65536 53\r\n", "'65536' is not a port"),
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 040000 53\r\n", "'040000' is not a port"),
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 -1 53\r\n", "'-1' is not a port"),
        (b"PROXY TCP4 198.51.100.7  192.0.2.1 1 53\r\n", "expected `PROXY TCP4|TCP6"),
        (b"PROXY \xff\r\n", "not ASCII"),
        (b"PROXY " + b"A" * 120, "no CRLF in its first 107 bytes"),
        (b"\x00\x1d\x12\x34", "no PROXY header signature"),
    ],
)
def test_malformed_headers_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProxyError, match=message) as caught:
        parse(data)
    assert not isinstance(caught.value, ProxyTruncated)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "v2 header truncated at 0 bytes"),
        (V2_SIGNATURE[:7], "v2 header truncated at 7 bytes"),
        (v2()[:15], "v2 header truncated at 15 bytes"),
        (v2()[:20], "truncated: 4 of 12 address bytes"),
        (b"PROX", "v1 header truncated at 4 bytes"),
        (b"PROXY TCP4 198.51.100.7 192.0", "before its CRLF"),
    ],
)
def test_truncated_headers(data: bytes, message: str) -> None:
    with pytest.raises(ProxyTruncated, match=message):
        parse(data)


def test_v1_tcp4_tcp6_unknown() -> None:
    line = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 853\r\n"
    assert parse(line + b"\x00\x1d") == ProxyHeader(
        1, "PROXY", ("198.51.100.7", 40000), ("192.0.2.1", 853), len(line))
    six = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 0 65535\r\n")
    assert six.source == ("2001:db8::7", 0)
    assert six.destination == ("2001:db8::1", 65535)
    unknown = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    assert (unknown.command, unknown.source) == ("PROXY", None)
    longest = b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n"
    assert len(longest) == 107
    assert parse(longest).length == 107


def test_trusted() -> None:
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    assert trusted("10.1.2.3", nets)
    assert trusted("::ffff:10.1.2.3", nets)
    assert trusted("fd00::5", nets)
    assert not trusted("192.0.2.1", nets)
    assert not trusted("10.1.2.3", [])
    assert not trusted("not an address", nets)


# -- read_header on a real stream ------------------------------------------------------


def _read(data: bytes, proxy: bool, required: bool = False) -> tuple[ProxyHeader | None, bytes,
                                                                      bytes]:
    """read_header over `data`; also returns what the stream still holds after it."""

    async def go() -> tuple[ProxyHeader | None, bytes, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        header, seen = await read_header(reader, proxy, required)
        return header, seen, await reader.read()

    return asyncio.run(go())


def test_read_header_leaves_the_stream_after_the_header() -> None:
    query = b"\x00\x03abc"
    for head in (v2(), b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 853\r\n"):
        header, seen, rest = _read(head + query, proxy=True)
        assert header is not None and header.source == ("198.51.100.7", 40000)
        assert (seen, rest) == (b"", query)


def test_read_header_gives_back_what_was_dns() -> None:
    # A plain query: two bytes of length read, nothing else.
    assert _read(b"\x00\x03abc", proxy=True) == (None, b"\x00\x03", b"abc")
    # Lengths 0x0d0a and 0x5052 look like signatures until they do not.
    body = b"\x12\x34" + b"\x00" * 20
    assert _read(b"\r\n" + body, proxy=True) == (None, b"\r\n" + body[:14], body[14:])
    assert _read(b"PR" + body, proxy=False) == (None, b"PR" + body[:4], body[4:])


@pytest.mark.parametrize(
    ("data", "proxy", "required", "message"),
    [
        (v2(), False, False, "not a trusted proxy"),
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 1 2\r\n", False, False, "not a trusted proxy"),
        (b"\x00\x03abc", True, True, "without the required PROXY header"),
        (v2(command=3), True, False, "unknown command 3"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", True, False, "expected `PROXY"),
    ],
)
def test_read_header_refuses(data: bytes, proxy: bool, required: bool, message: str) -> None:
    with pytest.raises(ProxyError, match=message):
        _read(data, proxy, required)


def test_read_header_at_end_of_stream() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        _read(v2()[:20], proxy=True)


# -- the plain TCP listener ------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _serving(loop: asyncio.AbstractEventLoop, up: FaultUpstream, proxies: list[str],
             required: bool = False) -> DnsServer:
    """A server whose ACL admits only the addresses the test's headers carry: an answer
    shows which client address the resolver saw (REFUSED: the proxy's own)."""
    resolver = Resolver(FakeMatcher(), Forwarder([(up.address, up.port)], timeout=1.0),
                        cache=Cache(), acl=Acl(allow=["198.51.100.0/24", "2001:db8::/32"]))
    server = DnsServer(resolver, [("127.0.0.1", 0)], tcp_idle_timeout=2.0,
                       trusted_proxies=[ipaddress.ip_network(p) for p in proxies],
                       proxy_required=required)
    loop.run_until_complete(server.start())
    return server


def _exchange(loop: asyncio.AbstractEventLoop, port: int, prefix: bytes,
              queries: int = 2) -> list[dns.message.Message | None]:
    """Send `prefix` then `queries` framed queries on one connection; the answers (None
    once the server closed)."""

    def client() -> list[dns.message.Message | None]:
        out: list[dns.message.Message | None] = []
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            wire = b""
            for i in range(queries):
                q = dns.message.make_query(f"host{i}.example.com", "A").to_wire()
                wire += struct.pack("!H", len(q)) + q
            s.sendall(prefix + wire)
            for _ in range(queries):
                head = _recv_exact(s, 2)
                body = _recv_exact(s, struct.unpack("!H", head)[0]) if head else None
                out.append(dns.message.from_wire(body) if body else None)
        return out

    return loop.run_until_complete(loop.run_in_executor(None, client))


def _rcodes(answers: list[dns.message.Message | None]) -> list[str | None]:
    return [dns.rcode.to_text(a.rcode()) if a is not None else None for a in answers]


def test_tcp_takes_the_client_address_from_a_trusted_proxy(
    fault_upstream: FaultUpstream, loop: asyncio.AbstractEventLoop
) -> None:
    server = _serving(loop, fault_upstream, ["127.0.0.0/8"])
    port = server.addresses[0][1]
    try:
        answers = _exchange(loop, port, v2())
        assert _rcodes(answers) == ["NOERROR", "NOERROR"]
        assert answers[0] is not None and answers[0].answer[0][0].to_text() == "192.0.2.53"
        v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 5000 53\r\n"
        assert _rcodes(_exchange(loop, port, v1)) == ["NOERROR", "NOERROR"]
        # LOCAL (a health check) and a bare connection: the proxy's own address.
        assert _rcodes(_exchange(loop, port, v2(command=0))) == ["REFUSED", "REFUSED"]
        assert _rcodes(_exchange(loop, port, b"")) == ["REFUSED", "REFUSED"]
    finally:
        loop.run_until_complete(server.stop())


def test_tcp_closes_on_a_header_from_anyone_else_and_on_a_missing_required_one(
    fault_upstream: FaultUpstream, loop: asyncio.AbstractEventLoop
) -> None:
    server = _serving(loop, fault_upstream, ["10.0.0.0/8"])
    port = server.addresses[0][1]
    try:
        assert _exchange(loop, port, v2()) == [None, None]
        assert _exchange(loop, port, b"PROXY UNKNOWN\r\n") == [None, None]
        # The listener goes on: a plain client is served (as itself).
        assert _rcodes(_exchange(loop, port, b"")) == ["REFUSED", "REFUSED"]
    finally:
        loop.run_until_complete(server.stop())
    server = _serving(loop, fault_upstream, ["127.0.0.1/32"], required=True)
    port = server.addresses[0][1]
    try:
        assert _exchange(loop, port, b"") == [None, None]
        assert _exchange(loop, port, v2(command=3)) == [None, None]
        assert _rcodes(_exchange(loop, port, v2())) == ["NOERROR", "NOERROR"]
    finally:
        loop.run_until_complete(server.stop())


# -- fuzz ------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_proxy_error(data: bytes) -> None:
    try:
        header = parse(data)
    except ProxyError:
        return
    assert 0 < header.length <= len(data)


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from([V2_SIGNATURE, b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 "]),
       tail=st.binary(max_size=120))
def test_bytes_after_a_signature_parse_or_raise_proxy_error(prefix: bytes, tail: bytes) -> None:
    try:
        header = parse(prefix + tail)
    except ProxyError:
        return
    assert header.length <= len(prefix + tail)
    if header.source is not None:
        assert 0 <= header.source[1] <= 65535
        ipaddress.ip_address(header.source[0])

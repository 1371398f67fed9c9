"""The PROXY protocol (HAProxy's spec, versions 1 and 2) in front of stream listeners.

A load balancer that accepts a client's TCP (or TLS) connection and opens its own to us
sends one header first, naming the client's address. We take it only from the addresses in
`server.trusted_proxies`: anyone else could name any address and pick their own policy. So:

- a header from an address that is not a trusted proxy closes the connection;
- a connection from a trusted proxy without a header closes too when the header is
  required (`server.proxy_protocol = "required"`), else it is served as the proxy's own;
- a LOCAL header (the balancer's own health check) or an UNKNOWN/UNSPEC family keeps the
  proxy's address.

`read_header` reads exactly the header's bytes from an `asyncio.StreamReader`, so what
follows (DNS messages, a TLS ClientHello) is left for the listener. On plain DNS over TCP
the first two bytes are a length, and a header's first two bytes are lengths too (3338 for
"\\r\\n", 20562 for "PR"): only the full signature tells them apart, and bytes read to see
it that turn out to be DNS are returned to the caller.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dns_resolver.steps.acl import Network, client_ip

log = logging.getLogger(__name__)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec 2.1)
_V2_FIXED = 16  # signature, version/command, family/protocol, length
_FAMILIES = {0x1: (4, 12), 0x2: (6, 36), 0x3: (0, 216)}  # AF_INET, AF_INET6, AF_UNIX


class ProxyError(ValueError):
    """A malformed or unacceptable PROXY header; the message says what is wrong."""


class ProxyTruncated(ProxyError):
    """The bytes end before the header does."""


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed header: `source`/`destination` are (address, port), or None when the
    header carries no address (LOCAL, UNKNOWN, UNSPEC, a Unix socket)."""

    version: int
    command: str  # "PROXY" or "LOCAL"
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes the header took on the wire


def parse(data: bytes) -> ProxyHeader:
    """The header at the start of `data` (v1 or v2). Raises ProxyTruncated when `data`
    ends inside it, ProxyError when it is malformed or is no PROXY header at all."""
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and len(data) < _V2_FIXED:
        raise ProxyTruncated(f"PROXY v2 header truncated at {len(data)} bytes")
    if data.startswith(V2_SIGNATURE):
        (length,) = struct.unpack_from("!H", data, 14)
        if len(data) < _V2_FIXED + length:
            raise ProxyTruncated(
                f"PROXY v2 header truncated: {len(data) - _V2_FIXED} of {length} "
                "address bytes"
            )
        return parse_v2(data[:_V2_FIXED], data[_V2_FIXED : _V2_FIXED + length])
    if V1_PREFIX.startswith(data[:6]) and len(data) < 6:
        raise ProxyTruncated(f"PROXY v1 header truncated at {len(data)} bytes")
    if data.startswith(V1_PREFIX):
        end = data.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(data) < V1_MAX:
                raise ProxyTruncated("PROXY v1 header truncated before its CRLF")
            raise ProxyError(f"PROXY v1 header has no CRLF in its first {V1_MAX} bytes")
        return parse_v1(data[: end + 2])
    raise ProxyError("no PROXY header signature")


def parse_v2(fixed: bytes, body: bytes) -> ProxyHeader:
    """A v2 header from its 16 fixed bytes and the `length` bytes after them."""
    if fixed[:12] != V2_SIGNATURE:
        raise ProxyError("bad PROXY v2 signature")
    version, command = fixed[12] >> 4, fixed[12] & 0x0F
    if version != 2:
        raise ProxyError(f"PROXY v2 header with version {version}")
    if command > 1:
        raise ProxyError(f"PROXY v2 header with unknown command {command}")
    family, protocol = fixed[13] >> 4, fixed[13] & 0x0F
    if family > 3 or protocol > 2:
        raise ProxyError(f"PROXY v2 header with unknown family/protocol 0x{fixed[13]:02x}")
    length = _V2_FIXED + len(body)
    if command == 0:
        # LOCAL: the proxy speaks for itself (health checks); the addresses are ignored.
        return ProxyHeader(2, "LOCAL", None, None, length)
    if family == 0:
        return ProxyHeader(2, "PROXY", None, None, length)
    ip_version, size = _FAMILIES[family]
    if len(body) < size:
        raise ProxyError(
            f"PROXY v2 header too short for its family: {len(body)} of {size} address bytes"
        )
    if ip_version == 0:  # a Unix socket: no client address to take
        return ProxyHeader(2, "PROXY", None, None, length)
    half = (size - 4) // 2
    src = ipaddress.ip_address(body[:half])
    dst = ipaddress.ip_address(body[half : 2 * half])
    sport, dport = struct.unpack_from("!HH", body, 2 * half)
    return ProxyHeader(2, "PROXY", (str(src), sport), (str(dst), dport), length)


def parse_v1(line: bytes) -> ProxyHeader:
    """A v1 header: one line `PROXY TCP4|TCP6|UNKNOWN SRC DST SPORT DPORT\\r\\n`."""
    if len(line) > V1_MAX:
        raise ProxyError(f"PROXY v1 header longer than {V1_MAX} bytes")
    if not line.startswith(V1_PREFIX) or not line.endswith(b"\r\n"):
        raise ProxyError("bad PROXY v1 header: not `PROXY ...` ending in CRLF")
    try:
        parts = line[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1 header is not ASCII") from None
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY", None, None, len(line))
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError(
            "bad PROXY v1 header: expected `PROXY TCP4|TCP6 SRC DST SPORT DPORT`"
        )
    want = 4 if parts[1] == "TCP4" else 6
    src, dst = (_v1_address(text, want) for text in parts[2:4])
    sport, dport = (_v1_port(text) for text in parts[4:6])
    return ProxyHeader(1, "PROXY", (src, sport), (dst, dport), len(line))


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"PROXY v1 header: {text!r} is not an IP address") from None
    if address.version != version:
        raise ProxyError(f"PROXY v1 header: {text} is not an IPv{version} address")
    return str(address)


def _v1_port(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyError(f"PROXY v1 header: {text!r} is not a port")
    return int(text)


def trusted(address: str, proxies: Sequence[Network]) -> bool:
    """Whether `address` (the TCP peer) is one of the trusted proxies."""
    ip = client_ip(address) if proxies else None
    if ip is None:
        return False
    return any(ip in net for net in proxies if net.version == ip.version)


async def read_header(
    reader: asyncio.StreamReader, proxy: bool, required: bool
) -> tuple[ProxyHeader | None, bytes]:
    """Read a PROXY header if the stream starts with one: (header or None, the bytes read
    that were not a header and belong to the stream). `proxy`: the peer is a trusted
    proxy; `required`: a trusted proxy must send a header. Raises ProxyError when the
    header is malformed, comes from an untrusted peer, or is missing but required;
    asyncio.IncompleteReadError when the stream ends first."""
    first = await reader.readexactly(2)
    if first == V2_SIGNATURE[:2]:
        rest = await reader.readexactly(_V2_FIXED - 2)
        head = first + rest
        if head[:12] == V2_SIGNATURE:
            _refuse_unless(proxy)
            (length,) = struct.unpack_from("!H", head, 14)
            return parse_v2(head, await reader.readexactly(length)), b""
        seen = head
    elif first == V1_PREFIX[:2]:
        rest = await reader.readexactly(len(V1_PREFIX) - 2)
        seen = first + rest
        if seen == V1_PREFIX:
            _refuse_unless(proxy)
            try:
                tail = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise ProxyError(f"PROXY v1 header longer than {V1_MAX} bytes") from None
            return parse_v1(seen + tail), b""
    else:
        seen = first
    if proxy and required:
        raise ProxyError("a trusted proxy connected without the required PROXY header")
    return None, seen


def _refuse_unless(proxy: bool) -> None:
    if not proxy:
        raise ProxyError("PROXY header from an address that is not a trusted proxy")


async def before_tls(
    conn: socket.socket,
    peer: tuple[Any, ...],
    proxies: Sequence[Network],
    required: bool,
    timeout: float,
) -> tuple[Any, ...] | None:
    """The client address of a connection accepted by a TLS listener (DoT, DoH), read
    from the raw socket `conn` before the handshake: the PROXY header's when a trusted
    proxy sent one, else `peer`; None when the connection must close (a header missing
    but required, a malformed one, none within `timeout`).

    Exactly the header's bytes are received; the ClientHello after it stays in the kernel
    for the handshake. From an address that is not a trusted proxy nothing is read: a
    header there is no ClientHello, and the handshake fails on it (the connection closes).
    """
    if not peer or not trusted(str(peer[0]), proxies):
        return peer
    try:
        async with asyncio.timeout(timeout):
            header = await _take_header(conn)
    except (TimeoutError, ProxyError, OSError) as exc:
        log.debug("connection from proxy %s: %s; closing", peer[0], exc)
        return None
    if header is None:
        if required:
            log.debug("proxy %s connected without the required PROXY header", peer[0])
            return None
        return peer
    return header.source or peer


async def _take_header(sock: socket.socket) -> ProxyHeader | None:
    """The header at the head of `sock`'s data, received (and nothing after it), or None
    (nothing received) when the data does not start with one."""
    while True:
        data = await _peek(sock, V1_MAX)
        if not data:
            raise ProxyError("connection closed before any byte")
        if not (V2_SIGNATURE.startswith(data[:12]) or V1_PREFIX.startswith(data[:6])):
            return None
        if data.startswith(V2_SIGNATURE) and len(data) >= _V2_FIXED:
            # TLVs can make a v2 header longer than what was peeked.
            data = await _peek(sock, _V2_FIXED + struct.unpack_from("!H", data, 14)[0])
        try:
            header = parse(data)
        except ProxyTruncated:
            # Rare (a proxy sends its header in one segment): wait for the rest.
            await asyncio.sleep(0.005)
            continue
        sock.recv(header.length)
        return header


async def _peek(sock: socket.socket, n: int) -> bytes:
    """Up to `n` bytes at the head of `sock`'s data, left there; waits for the first."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return sock.recv(n, socket.MSG_PEEK)

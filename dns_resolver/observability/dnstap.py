"""dnstap output: protobuf `dnstap.Dnstap` messages over Frame Streams to a collector.

The producers never wait. The Python chain queues one tuple per message (`client`,
`forwarder`); the C fast path writes whole frames into its own buffer (`FastPath.set_dnstap`)
that the event loop hands over in one piece now and then (`frames`). A writer thread
encodes the tuples, connects (Unix socket or TCP, bidirectional handshake: READY, ACCEPT,
START), writes, and reconnects with back-off when the collector goes away. The queue is
bounded: when it is full (the collector is slow or away) messages are dropped and counted.

The protobuf is encoded by hand (the fields are a few varints and byte strings), from the
published schema (github.com/dnstap/dnstap.pb, dnstap.proto); the C fast path encodes the
same fields the same way.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from dns_resolver import wire
from fdconfig import ANONYMIZE_MODES
from fdconfig.dnstap import DnstapConfig
from filtercore._digest import siphash24

__all__ = [
    "CONTENT_TYPE",
    "Dnstap",
    "control_frame",
    "dnstap_prefix",
    "encode_dnstap",
    "peer_address",
    "policy_fields",
    "read_control",
    "tap_address",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"

# dnstap.proto: Message.Type, SocketFamily, SocketProtocol, Policy.Action, Policy.Match.
CLIENT_QUERY, CLIENT_RESPONSE, FORWARDER_QUERY, FORWARDER_RESPONSE = 5, 6, 7, 8
MESSAGE_TYPES = {
    "client_query": CLIENT_QUERY,
    "client_response": CLIENT_RESPONSE,
    "forwarder_query": FORWARDER_QUERY,
    "forwarder_response": FORWARDER_RESPONSE,
}
INET, INET6 = 1, 2
# SocketProtocol by our transport names (resolver.TRANSPORTS): UDP, TCP, DOT, DOH, DOQ.
PROTOCOLS = {"udp": 1, "tcp": 2, "tls": 3, "https": 4, "quic": 7}
NXDOMAIN_ACTION, NODATA_ACTION, LOCAL_DATA_ACTION = 1, 2, 6
MATCH_QNAME, MATCH_RESPONSE_IP = 1, 3

# Frame Streams control frames (fstrm: farsightsec/fstrm, docs/fstrm.md).
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5
FIELD_CONTENT_TYPE = 1
_MAX_CONTROL = 512

BACKOFF_FIRST = 0.25  # seconds before the first reconnection; doubled up to BACKOFF_MAX
BACKOFF_MAX = 4.0
SEND_TIMEOUT = 5.0  # a collector that takes no data for this long is dropped
WAKE_SECONDS = 0.05  # how long a queued message may wait for the writer
_BATCH = 512  # tuples encoded per write

# (type, family, protocol, address, port, peer, peer port, query time, query, response time,
#  response, EDE option of a block or b"")
_Event = tuple[int, int, int, bytes, int, bytes, int, float, bytes, float, bytes, bytes]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _time_fields(number: int, seconds: float) -> bytes:
    """`*_time_sec` (uint64, `number`) and `*_time_nsec` (fixed32, `number` + 1)."""
    whole = int(seconds)
    nanos = min(int((seconds - whole) * 1e9), 999_999_999)
    return _int_field(number, whole) + _varint((number + 1) << 3 | 5) + struct.pack("<I", nanos)


def _ede_text(option: bytes) -> str:
    """The EXTRA-TEXT of an encoded EDE option (code 15, length, info code, text)."""
    return option[6:].decode("utf-8", "replace")


def policy_fields(response: bytes, option: bytes) -> tuple[bytes, int, int, bytes] | None:
    """(rule, action, match, value) of the Policy for a block answered with `response`
    whose EDE option was `option`; None when `option` is empty (not a block).

    The rule is the EDE text without its `blocked: ` prefix (`category=... list=...
    rule=...`, then `via=...` and the policy's note). The action is what was answered. A
    block found in an answer's CNAME target matches QNAME with the target as the value (as
    an RPZ QNAME trigger matches every name of a CNAME chain); one found by an address
    matches RESPONSE_IP with the address.
    """
    if not option:
        return None
    text = _ede_text(option).removeprefix("blocked: ")
    if wire.rcode_of(response) == wire.NXDOMAIN:
        action = NXDOMAIN_ACTION
    else:
        action = LOCAL_DATA_ACTION if response[6:8] != b"\0\0" else NODATA_ACTION
    match, value = MATCH_QNAME, _question(response)[:-4]
    for part in text.split():
        if part.startswith("via=cname="):
            value = wire.encode_name(part.removeprefix("via=cname="))
        elif part.startswith("via=address="):
            match = MATCH_RESPONSE_IP
            value = ipaddress.ip_address(part.removeprefix("via=address=")).packed
    return text.encode(), action, match, value


def _question(response: bytes) -> bytes:
    """The question section of `response` (ours: QDCOUNT 1, no compression in it)."""
    end = 12
    while end < len(response) and response[end]:
        end += 1 + response[end]
    return response[12 : end + 5]


def dnstap_prefix(identity: bytes, version: bytes) -> bytes:
    """The `Dnstap.identity` and `.version` fields every message starts with."""
    return (_bytes_field(1, identity) if identity else b"") + (
        _bytes_field(2, version) if version else b""
    )


def encode_dnstap(prefix: bytes, event: _Event) -> bytes:
    """One `Dnstap` message (type MESSAGE) for `event` after `prefix` (`dnstap_prefix`)."""
    (kind, family, protocol, address, port, peer, peer_port, qtime, query, rtime, response,
     option) = event  # fmt: skip
    message = _int_field(1, kind) + _int_field(2, family) + _int_field(3, protocol)
    if address:
        message += _bytes_field(4, address)
    if peer:
        message += _bytes_field(5, peer)
    if address:
        message += _int_field(6, port)
    if peer:
        message += _int_field(7, peer_port)
    message += _time_fields(8, qtime)
    if query:
        message += _bytes_field(10, query)
    if response:
        message += _time_fields(12, rtime) + _bytes_field(14, response)
        policy = policy_fields(response, option)
        if policy is not None:
            rule, action, match, value = policy
            message += _bytes_field(
                15,
                _bytes_field(1, b"filterdns")
                + _bytes_field(2, rule)
                + _int_field(3, action)
                + _int_field(4, match)
                + _bytes_field(5, value),
            )
    return prefix + _bytes_field(14, message) + _int_field(15, 1)


def tap_address(host: str, mode: str, key: bytes) -> tuple[int, bytes]:
    """(socket family, address bytes) of a client as dnstap shows it under the query log's
    anonymize `mode`: its /24 or /48 network, a keyed hash in the address's own size (the
    first 4 bytes of SipHash-2-4 for IPv4, 8 then zeros for IPv6), or as is. An IPv4 client
    on a dual-stack socket (::ffff:a.b.c.d) is IPv4."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    packed = ip.packed
    if mode == "truncate":
        keep = 3 if ip.version == 4 else 6
        packed = packed[:keep] + bytes(len(packed) - keep)
    elif mode == "hash":
        digest = siphash24(key, str(ip).encode()).to_bytes(8, "big")
        packed = digest[:4] if ip.version == 4 else digest + bytes(8)
    return (INET if ip.version == 4 else INET6), packed


def peer_address(host: str) -> tuple[int, bytes]:
    """(socket family, packed address) of an upstream as forwarder messages name it; no
    address for a host name (a DoH upstream before its bootstrap answered)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return INET, b""
    return (INET if ip.version == 4 else INET6), ip.packed


def control_frame(kind: int, content_type: bool = True) -> bytes:
    """A Frame Streams control frame of `kind`, naming our content type if asked."""
    body = struct.pack("!I", kind)
    if content_type:
        body += struct.pack("!II", FIELD_CONTENT_TYPE, len(CONTENT_TYPE)) + CONTENT_TYPE
    return struct.pack("!II", 0, len(body)) + body


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the collector closed the connection")
        out += chunk
    return out


def read_control(sock: socket.socket) -> tuple[int, list[bytes]]:
    """A control frame from `sock`: (type, content types it names)."""
    escape, length = struct.unpack("!II", _read_exactly(sock, 8))
    if escape != 0 or not 4 <= length <= _MAX_CONTROL:
        raise ConnectionError("not a Frame Streams control frame")
    body = _read_exactly(sock, length)
    kind = struct.unpack("!I", body[:4])[0]
    types, pos = [], 4
    while pos + 8 <= length:
        field, size = struct.unpack("!II", body[pos : pos + 8])
        if field == FIELD_CONTENT_TYPE:
            types.append(body[pos + 8 : pos + 8 + size])
        pos += 8 + size
    return kind, types


class Dnstap:
    """The dnstap output of one server process (see the module docstring).

    Args:
        config: the `[dnstap]` section (enabled).
        anonymize: the query log's anonymize mode, applied unless `config.anonymize` is off.
    """

    def __init__(self, config: DnstapConfig, anonymize: str = "truncate") -> None:
        self.config = config
        self.mode = anonymize if config.anonymize else "none"
        if self.mode not in ANONYMIZE_MODES:
            raise ValueError(f"unknown anonymize mode {self.mode!r}; one of {ANONYMIZE_MODES}")
        self.key = secrets.token_bytes(16)  # hash pseudonyms link one run only
        self._prefix = dnstap_prefix(config.identity.encode(), config.version.encode())
        self.types = frozenset(MESSAGE_TYPES[m] for m in config.messages)
        self.client_query = CLIENT_QUERY in self.types
        self.client_response = CLIENT_RESPONSE in self.types
        self.forwarders = bool(self.types & {FORWARDER_QUERY, FORWARDER_RESPONSE})
        self.target = config.socket or f"{config.address}"
        self.sent = 0
        self.dropped = 0  # queue full (counted by the producers)
        self.lost = 0  # written to a collector that went away (counted by the writer)
        self.connections = 0
        self.connected = False
        # More drop counters (the C fast path's buffer), summed into the metric.
        self.more_dropped: list[Callable[[], int]] = []
        self._queue: collections.deque[_Event | tuple[bytes, int]] = collections.deque()
        self._queued = 0  # messages put (producers only) ...
        self._taken = 0  # ... and taken (writer only): their difference is the backlog
        self._clients: dict[str, tuple[int, bytes]] = {}
        self._closed = False
        self._wake = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="dnstap", daemon=True)
        self._thread.start()

    def prefix(self) -> bytes:
        """The encoded identity and version (for the C fast path's frames)."""
        return self._prefix

    # -- producers (the event loop) -------------------------------------------------------

    def _room(self, n: int) -> bool:
        """Count `n` messages in, or as dropped when the backlog would pass `queue_size`.
        While the collector is connected, an empty queue takes any one piece (the C fast
        path hands over a drain's worth of frames at once, which may be more than a small
        `queue_size`); while it is away, the bound is strict, so a piece that came in just
        as the writer took the last one cannot sit in the queue beyond it."""
        backlog = self._queued - self._taken
        if backlog + n > self.config.queue_size and (backlog or not self.connected):
            self.dropped += n
            return False
        self._queued += n
        return True

    def client(
        self,
        query: bytes,
        response: bytes | None,
        host: str,
        port: int,
        protocol: str,
        received: float,
        option: bytes = b"",
    ) -> None:
        """CLIENT_QUERY and CLIENT_RESPONSE (as configured) for one client exchange.
        `received` is the wall-clock time of the query; the answer's is now."""
        wanted = self.client_query + (self.client_response and response is not None)
        if not wanted or self._closed or not self._room(wanted):
            return
        family, address = self._client_address(host)
        proto = PROTOCOLS[protocol]
        now = time.time()
        if self.client_query:
            self._queue.append(
                (
                    CLIENT_QUERY,
                    family,
                    proto,
                    address,
                    port,
                    b"",
                    0,
                    received,
                    query,
                    0.0,
                    b"",
                    b"",
                )  # fmt: skip
            )
        if self.client_response and response is not None:
            self._queue.append(
                (
                    CLIENT_RESPONSE,
                    family,
                    proto,
                    address,
                    port,
                    b"",
                    0,
                    received,
                    b"",
                    now,
                    response,
                    option,
                )  # fmt: skip
            )

    def forwarder(
        self, query: bytes, response: bytes | None, host: str, port: int, protocol: str,
        sent: float,
    ) -> None:  # fmt: skip
        """FORWARDER_QUERY and FORWARDER_RESPONSE (as configured) for one upstream
        exchange with `host`:`port` over `protocol` (`udp`, `tcp`, `dot`, `doh`) that
        started at wall-clock time `sent`."""
        want_query = FORWARDER_QUERY in self.types
        want_response = FORWARDER_RESPONSE in self.types and response is not None
        wanted = want_query + want_response
        if not wanted or self._closed or not self._room(wanted):
            return
        family, packed = peer_address(host)
        proto = PROTOCOLS[protocol]
        if want_query:
            self._queue.append(
                (
                    FORWARDER_QUERY,
                    family,
                    proto,
                    b"",
                    0,
                    packed,
                    port,
                    sent,
                    query,
                    0.0,
                    b"",
                    b"",
                )  # fmt: skip
            )
        if want_response:
            self._queue.append(
                (
                    FORWARDER_RESPONSE,
                    family,
                    proto,
                    b"",
                    0,
                    packed,
                    port,
                    sent,
                    b"",
                    time.time(),
                    response or b"",
                    b"",
                )  # fmt: skip
            )

    def frames(self, data: bytes, count: int) -> None:
        """Queue `count` frames the C fast path encoded (length-prefixed, back to back)."""
        if count and not self._closed and self._room(count):
            self._queue.append((data, count))

    def _client_address(self, host: str) -> tuple[int, bytes]:
        found = self._clients.get(host)
        if found is None:
            if len(self._clients) >= 65536:
                self._clients.clear()
            found = self._clients[host] = tap_address(host, self.mode, self.key)
        return found

    # -- metrics ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """Prometheus families (registered on the metrics registry)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield CounterMetricFamily(
            "filterdns_dnstap_sent", "dnstap messages written to the collector.", value=self.sent
        )
        yield CounterMetricFamily(
            "filterdns_dnstap_dropped",
            "dnstap messages dropped: the queue was full (the collector slow or away) or the "
            "collector went away while they were being written.",
            value=self.total_dropped(),
        )
        yield CounterMetricFamily(
            "filterdns_dnstap_connections",
            "Connections made to the dnstap collector (handshake done).",
            value=self.connections,
        )
        yield GaugeMetricFamily(
            "filterdns_dnstap_connected",
            "1 while the dnstap collector is connected.",
            value=int(self.connected),
        )
        yield GaugeMetricFamily(
            "filterdns_dnstap_queued",
            "dnstap messages waiting for the collector.",
            value=self._queued - self._taken,
        )

    def total_dropped(self) -> int:
        return self.dropped + self.lost + sum(f() for f in self.more_dropped)

    # -- the writer thread ----------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued if the collector is there (bounded), STOP, and end."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(SEND_TIMEOUT + 1)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            if self._sock is None:
                if self._closed:
                    return
                try:
                    self._connect()
                    backoff = BACKOFF_FIRST
                except OSError as exc:
                    log.debug("dnstap collector %s: %s", self.target, exc)
                    self._wake.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
            if not self._queue:
                if self._closed:
                    self._finish()
                    return
                self._wake.wait(WAKE_SECONDS)
                continue
            self._write_some()

    def _connect(self) -> None:
        if self.config.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = self.config.socket
        else:
            address = self.config.address
            assert address is not None
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            target = (address.host, address.port)
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(target)
            sock.sendall(control_frame(READY))
            kind, types = read_control(sock)
            if kind != ACCEPT or CONTENT_TYPE not in types:
                raise ConnectionError(f"the collector did not accept {CONTENT_TYPE.decode()}")
            sock.sendall(control_frame(START))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.connections += 1
        self.connected = True
        log.info("dnstap: connected to %s", self.target)

    def _write_some(self) -> None:
        chunks: list[bytes] = []
        count = 0
        queue = self._queue
        while queue and len(chunks) < _BATCH:
            item = queue.popleft()
            if len(item) == 2:
                data, n = item  # type: ignore[misc]
                chunks.append(data)
                count += n
            else:
                frame = encode_dnstap(self._prefix, item)  # type: ignore[arg-type]
                chunks.append(struct.pack("!I", len(frame)) + frame)
                count += 1
        self._taken += count
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(b"".join(chunks))
        except OSError as exc:
            self.lost += count
            log.warning("dnstap collector %s went away: %s; reconnecting", self.target, exc)
            self._drop_connection()
            return
        self.sent += count

    def _drop_connection(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self.connected = False

    def _finish(self) -> None:
        """STOP, then wait (bounded) for the collector's FINISH."""
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendall(control_frame(STOP, content_type=False))
            read_control(sock)
        self._drop_connection()

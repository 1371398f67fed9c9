"""DNS over QUIC (RFC 9250) on UDP, with aioquic: ALPN "doq", one query per client-opened
bidirectional stream (2-byte length prefix, message ID 0, the client's FIN after it), the
answer on the same stream followed by our FIN.

The ClientID is the first label of the TLS server name below `[tls] server_name`, as for
DoT (`certs.client_id_of`); a name we do not serve is refused in the handshake
(`unrecognized_name`). The certificate is the one `certs.ServerTls` has in force (read
again when it reloads), answers go through `DnsServer.answer` / `answer_later` like every
other transport's, and are padded as DoT's are (`[tls] padding`).

Errors (RFC 9250 4.3): a stream whose length prefix does not match its bytes, a query with
a non-zero message ID, bytes that are not DNS, data on a stream the client may not open:
each is a protocol error, and the connection is closed with DOQ_PROTOCOL_ERROR (the
listener goes on). A stream over `[tls] max_inflight` queries of one connection being
answered is reset with DOQ_EXCESSIVE_LOAD; a connection over `max_connections` is closed
with it. `[tls] idle_timeout` is QUIC's idle timeout.

aioquic keeps the client's server name to itself on the server side, so `_DoqProtocol`
reads it from the ClientHello before aioquic does (`_peek_server_name`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

from aioquic import tls as quic_tls
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from dns_resolver import edns
from dns_resolver.resolver import Pending
from dns_resolver.transports.certs import ServerTls, client_id_of
from dns_resolver.transports.stream import ListenerStats

if TYPE_CHECKING:
    from dns_resolver.transports.server import DnsServer

log = logging.getLogger(__name__)

TRANSPORT = "quic"
ALPN = ["doq"]
# RFC 9250 8.4: DoQ error codes.
DOQ_NO_ERROR = 0x0
DOQ_INTERNAL_ERROR = 0x1
DOQ_PROTOCOL_ERROR = 0x2
DOQ_EXCESSIVE_LOAD = 0x4


class _UnrecognizedName(quic_tls.Alert):
    description = quic_tls.AlertDescription.unrecognized_name


class DoqListener:
    """DNS over QUIC on `host`:`port` (UDP): the same shape as the stream listeners
    (`start`, `stop`, `transport`, `host`, `port`)."""

    transport = TRANSPORT

    def __init__(
        self,
        server: DnsServer,
        host: str,
        port: int,
        tls: ServerTls,
        stats: ListenerStats,
        *,
        reuse_port: bool = False,
    ) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.tls = tls
        self.stats = stats
        self.reuse_port = reuse_port
        self.open: set[_DoqProtocol] = set()
        self._quic: QuicServer | None = None
        self._endpoint: asyncio.DatagramTransport | None = None
        self._configuration = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
        self._loaded: object = None  # the ServerTls contexts the certificate came with
        self._tickets: dict[bytes, quic_tls.SessionTicket] = {}
        stats.open.setdefault(TRANSPORT, 0)
        self._refresh()

    async def start(self) -> None:
        """Bind and listen. Raises OSError naming the address."""
        from dns_resolver.transports.server import bind

        sock = bind(self.host, self.port, socket.SOCK_DGRAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._endpoint, self._quic = await loop.create_datagram_endpoint(  # type: ignore[assignment]
            lambda: QuicServer(
                configuration=self._configuration,
                create_protocol=self._protocol,
                session_ticket_fetcher=self._tickets.pop,
                session_ticket_handler=self._keep_ticket,
            ),
            sock=sock,
        )

    async def stop(self) -> None:
        """Close every connection (DOQ_NO_ERROR) and the socket."""
        for protocol in list(self.open):
            protocol.close(DOQ_NO_ERROR)
        if self._quic is not None:
            self._quic.close()
            self._quic = None

    def _refresh(self) -> None:
        """Take the certificate `ServerTls` has in force now (it builds new contexts on
        every reload and rotation), for the connections that start from now on."""
        if self._loaded is self.tls.contexts:
            return
        cert, key = self.tls.cert_files()
        self._configuration.load_cert_chain(cert, key)
        self._configuration.idle_timeout = self.tls.config.idle_timeout
        self._loaded = self.tls.contexts
        # Tickets of the old key material resume nothing useful: start afresh (and the
        # rotation bounds how long one ticket serves, as for DoT).
        self._tickets.clear()

    def _keep_ticket(self, ticket: quic_tls.SessionTicket) -> None:
        if len(self._tickets) >= 4 * self.tls.config.max_connections:
            self._tickets.clear()  # bounded: a flood of handshakes cannot grow it
        self._tickets[ticket.ticket] = ticket

    def _protocol(self, quic: QuicConnection, **kwargs: Any) -> _DoqProtocol:
        self._refresh()
        return _DoqProtocol(quic, listener=self, **kwargs)


class _DoqProtocol(QuicConnectionProtocol):
    """One DoQ connection."""

    def __init__(self, quic: QuicConnection, *, listener: DoqListener, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.listener = listener
        self.peer: tuple[Any, ...] = ()
        self.client_id: str | None = None
        self.counted = False
        self.streams: dict[int, bytearray] = {}
        self.inflight: dict[int, asyncio.Task[None]] = {}
        _peek_server_name(quic, self)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.peer = addr
        super().datagram_received(data, addr)

    def accept_server_name(self, name: str | None) -> None:
        """The ClientHello's server name: our ClientID, or refused (raises the alert)."""
        accepted, self.client_id = client_id_of(name, self.listener.tls.config.server_name)
        if not accepted:
            self.listener.stats.error(TRANSPORT, "server_name")
            raise _UnrecognizedName(f"server name {name!r} is not served here")

    def quic_event_received(self, event: events.QuicEvent) -> None:
        listener, stats = self.listener, self.listener.stats
        if isinstance(event, events.StreamDataReceived):
            self._data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.HandshakeCompleted):
            if len(listener.open) >= listener.tls.config.max_connections:
                stats.error(TRANSPORT, "max_connections")
                self.close(DOQ_EXCESSIVE_LOAD, "too many connections")
                return
            listener.open.add(self)
            self.counted = True
            stats.open[TRANSPORT] += 1
            stats.accepted[TRANSPORT] = stats.accepted.get(TRANSPORT, 0) + 1
            key = (TRANSPORT, bool(event.session_resumed))
            stats.handshakes[key] = stats.handshakes.get(key, 0) + 1
        elif isinstance(event, events.StreamReset):
            self.streams.pop(event.stream_id, None)
            task = self.inflight.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, events.ConnectionTerminated):
            self._ended()

    def close(self, error_code: int = DOQ_NO_ERROR, reason_phrase: str = "") -> None:
        super().close(error_code, reason_phrase)
        self._ended()

    def _ended(self) -> None:
        for task in self.inflight.values():
            task.cancel()
        self.inflight.clear()
        self.streams.clear()
        if self.counted:
            self.counted = False
            self.listener.open.discard(self)
            self.listener.stats.open[TRANSPORT] -= 1

    def _data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id % 4 != 0:
            # Only the client's bidirectional streams carry queries (RFC 9250 4.2).
            self._protocol_error(f"data on stream {stream_id}, which no query may use")
            return
        buf = self.streams.setdefault(stream_id, bytearray())
        buf += data
        if len(buf) >= 2 and len(buf) > 2 + struct.unpack_from("!H", buf)[0]:
            self._protocol_error("more bytes on a stream than its length prefix says")
            return
        if not end:
            return
        del self.streams[stream_id]
        if len(buf) < 2 or len(buf) != 2 + struct.unpack_from("!H", buf)[0]:
            self._protocol_error("a stream ended before the length its prefix says")
            return
        query = bytes(buf[2:])
        if len(query) >= 2 and query[:2] != b"\0\0":
            self._protocol_error("a query with a message ID other than 0")
            return
        if len(self.inflight) >= self.listener.tls.config.max_inflight:
            self._quic.reset_stream(stream_id, DOQ_EXCESSIVE_LOAD)
            self.transmit()
            return
        out = self.listener.server.answer(query, self.peer, TRANSPORT, self.client_id)
        if out is None:
            self._protocol_error("a stream's bytes are not a DNS message")
        elif isinstance(out, Pending):
            task = asyncio.get_running_loop().create_task(self._later(stream_id, out, query))
            self.inflight[stream_id] = task
        else:
            self._send(stream_id, out)

    async def _later(self, stream_id: int, pending: Pending, query: bytes) -> None:
        try:
            out = await self.listener.server.answer_later(pending, query, self.peer, TRANSPORT)
        finally:
            self.inflight.pop(stream_id, None)
        if out is not None:
            self._send(stream_id, out)
        else:
            with contextlib.suppress(Exception):  # the connection may be gone meanwhile
                self._quic.reset_stream(stream_id, DOQ_INTERNAL_ERROR)
                self.transmit()

    def _send(self, stream_id: int, out: bytes) -> None:
        if self.listener.tls.config.padding:
            out = edns.pad(out)
        try:
            self._quic.send_stream_data(stream_id, struct.pack("!H", len(out)) + out, True)
        except Exception as exc:  # the stream or connection was closed meanwhile
            log.debug("DoQ answer on stream %d not sent: %s", stream_id, exc)
            return
        self.transmit()

    def _protocol_error(self, why: str) -> None:
        log.debug("DoQ client %s: %s; closing with DOQ_PROTOCOL_ERROR", self.peer[:1], why)
        self.listener.stats.error(TRANSPORT, "framing")
        self.close(DOQ_PROTOCOL_ERROR, why)


def _peek_server_name(quic: QuicConnection, protocol: _DoqProtocol) -> None:
    """Have `protocol.accept_server_name` see the ClientHello's server name before
    aioquic's TLS handles it (aioquic's server does not keep it)."""
    initialize = quic._initialize

    def _initialize(peer_cid: bytes) -> None:
        initialize(peer_cid)
        context = quic.tls
        handle = context._server_handle_hello

        def server_handle_hello(input_buf: Any, initial_buf: Any, handshake_buf: Any) -> None:
            start = input_buf.tell()
            hello = quic_tls.pull_client_hello(input_buf)
            input_buf.seek(start)
            protocol.accept_server_name(hello.server_name)
            handle(input_buf, initial_buf, handshake_buf)

        context._server_handle_hello = server_handle_hello  # type: ignore[method-assign]

    quic._initialize = _initialize  # type: ignore[method-assign]

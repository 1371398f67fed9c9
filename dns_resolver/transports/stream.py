"""What every stream transport shares: the DNS-over-a-stream loop (2-byte length framing,
RFC 1035 4.2.2 / RFC 7766 / RFC 7858) that plain TCP and DoT run, and `StreamListener`,
the accepting side of the encrypted listeners (DoT, DoH): the connection limit, the TLS
handshake with its timeout, the ClientID of the server name, and the counters.

Listeners only frame and unframe: every query goes through `DnsServer.answer` and
`DnsServer.answer_later` (`Resolver.handle` / `Resolver.resolve`), so the ACL, policies,
blocks, cache, metrics, query log and dnstap behave the same on every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from dns_resolver import edns
from dns_resolver.resolver import Pending
from dns_resolver.transports import proxy_protocol
from dns_resolver.transports.certs import CLIENT_ID_ATTRIBUTE, ServerTls

if TYPE_CHECKING:
    from dns_resolver.transports.server import DnsServer

log = logging.getLogger(__name__)

# Why a listener closed a connection or refused a request (the metric's `kind` label).
ERROR_KINDS = (
    "max_connections",  # over tls.max_connections: closed at once
    "handshake",  # a failed TLS handshake (plain DNS or random bytes, an old client)
    "handshake_timeout",
    "server_name",  # a TLS server name we do not serve (unrecognized_name)
    "idle",  # no whole query within the idle timeout (also a client trickling bytes)
    "framing",  # bytes that are not a DNS message on a DNS stream
    "http",  # an HTTP request answered with a 4xx status
    "http_protocol",  # broken HTTP/1.1 or HTTP/2 (a bad preface, a frame out of place)
    "refused_stream",  # an HTTP/2 stream over tls.max_streams: reset, the others go on
    "proxy",  # a trusted proxy's PROXY header malformed, or missing when required
)


class ListenerStats:
    """Connections and errors of the stream listeners, by transport: a Prometheus
    collector (`filterdns_listener_*`, `filterdns_tls_handshakes_total`)."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.accepted: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.handshakes: dict[tuple[str, bool], int] = {}
        # Called before each scrape: listeners that count in C (dotpath.py) add theirs.
        self.refresh: list[Callable[[], None]] = []

    def error(self, transport: str, kind: str) -> None:
        key = (transport, kind)
        self.errors[key] = self.errors.get(key, 0) + 1

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for refresh in self.refresh:
            refresh()
        gauge = GaugeMetricFamily(
            "filterdns_listener_connections",
            "Open client connections of the stream listeners.",
            labels=["transport"],
        )
        for transport, n in sorted(self.open.items()):
            gauge.add_metric([transport], n)
        yield gauge
        family = CounterMetricFamily(
            "filterdns_listener_accepted",
            "Client connections accepted by the stream listeners.",
            labels=["transport"],
        )
        for transport, n in sorted(self.accepted.items()):
            family.add_metric([transport], n)
        yield family
        family = CounterMetricFamily(
            "filterdns_listener_errors",
            "Connections closed and requests refused by the stream listeners, by why "
            f"({', '.join(ERROR_KINDS)}).",
            labels=["transport", "kind"],
        )
        for (transport, kind), n in sorted(self.errors.items()):
            family.add_metric([transport, kind], n)
        yield family
        family = CounterMetricFamily(
            "filterdns_tls_handshakes",
            "Completed TLS handshakes of the encrypted listeners: full, or resumed from a "
            "session ticket.",
            labels=["transport", "resumed"],
        )
        for (transport, resumed), n in sorted(self.handshakes.items()):
            family.add_metric([transport, "true" if resumed else "false"], n)
        yield family


async def serve_stream(
    server: DnsServer,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    peer: tuple[Any, ...],
    transport: str,
    *,
    client_id: str | None = None,
    first: bytes = b"",
    idle_timeout: float,
    max_inflight: int,
    padding: bool = False,
    stats: ListenerStats | None = None,
) -> None:
    """Answer length-framed DNS queries on one connection until the client closes, stays
    idle for `idle_timeout` (a message must arrive whole within it, so a client sending a
    byte a second is closed too), or sends bytes that are not DNS.

    Queries that need the upstream run concurrently, at most `max_inflight` at once, and
    are answered as they finish (RFC 7766 6.2.1.1: a client matches answers by ID).
    `padding`: answers to EDNS queries are padded (RFC 7830, RFC 8467 block length).
    `first`: the stream's first bytes, already read (at least the first message's length:
    what the PROXY protocol check read of a connection without a header).
    """
    client = peer[0] if peer else ""
    slots = asyncio.Semaphore(max_inflight)
    inflight: set[asyncio.Task[None]] = set()

    def send(out: bytes) -> None:
        if padding:
            out = edns.pad(out)
        if not writer.is_closing():
            writer.write(struct.pack("!H", len(out)) + out)

    async def answer_later(pending: Pending, data: bytes) -> None:
        try:
            out = await server.answer_later(pending, data, peer, transport)
        finally:
            slots.release()
        if out is not None:
            send(out)

    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    if first:
                        length = struct.unpack_from("!H", first)[0]
                        data = first[2:] + await reader.readexactly(length + 2 - len(first))
                        first = b""
                    else:
                        length = struct.unpack("!H", await reader.readexactly(2))[0]
                        data = await reader.readexactly(length)
            except TimeoutError:
                if stats is not None:
                    stats.error(transport, "idle")
                return
            except asyncio.IncompleteReadError:
                return
            out = server.answer(data, peer, transport, client_id)
            if out is None:
                # Garbage on a stream: the framing can no longer be trusted.
                log.debug("%s client %s: not a DNS message, closing", transport, client)
                if stats is not None:
                    stats.error(transport, "framing")
                return
            if isinstance(out, Pending):
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(answer_later(out, data))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            else:
                send(out)
            await writer.drain()
    except (ConnectionError, OSError) as exc:
        log.debug("%s client %s: %s", transport, client, exc)
    except asyncio.CancelledError:
        # Shutdown raced with a new connection: end quietly (asyncio's start_server
        # callback would otherwise log the cancellation as an error).
        pass
    finally:
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()


Handler = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, tuple[Any, ...], str | None], Awaitable[None]
]


class StreamListener:
    """One encrypted stream listener (`transport` "tls" or "https") on one address.

    Connections are accepted from the raw socket and counted against
    `tls.max_connections` (beyond: closed at once, before any TLS work); nothing is read
    from them before the TLS handshake starts, so the ClientHello is never caught in a
    stream buffer (and a PROXY header could be read exactly, from the socket). The
    handshake uses the context `ServerTls` has in force, within `tls.handshake_timeout`
    (a failure is a clean close); then `handler(reader, writer, peer, client_id)` serves
    the connection. A failing connection never stops the listener.
    """

    def __init__(
        self,
        server: DnsServer,
        host: str,
        port: int,
        transport: str,
        tls: ServerTls,
        handler: Handler,
        stats: ListenerStats,
        *,
        reuse_port: bool = False,
    ) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.transport = transport
        self.tls = tls
        self.handler = handler
        self.stats = stats
        self.reuse_port = reuse_port
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        stats.open.setdefault(transport, 0)

    async def start(self) -> None:
        """Bind and listen. Raises OSError naming the address."""
        from dns_resolver.transports.server import TCP_BACKLOG, bind

        sock = bind(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        sock.listen(TCP_BACKLOG)
        self._sock = sock
        self._acceptor = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    async def stop(self) -> None:
        """Stop accepting and close the open connections."""
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
            self._acceptor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        # Closed writers make their handlers see EOF and return normally.
        for writer in list(self._writers):
            writer.close()
        if self._connections:
            await asyncio.wait(self._connections, timeout=1.0)
        for task in list(self._connections):
            task.cancel()

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                # Out of file descriptors, say: wait a little rather than spin.
                log.warning("%s listener %s:%d: accept failed: %s", self.transport,
                            self.host, self.port, exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._connections) >= self.tls.config.max_connections:
                self.stats.error(self.transport, "max_connections")
                conn.close()
                continue
            task = loop.create_task(self._serve(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket) -> None:
        transport, stats = self.transport, self.stats
        stats.open[transport] += 1
        stats.accepted[transport] = stats.accepted.get(transport, 0) + 1
        try:
            peer = conn.getpeername()
        except OSError:
            peer = ()
        writer: asyncio.StreamWriter | None = None
        try:
            server = self.server
            peer = await proxy_protocol.before_tls(  # type: ignore[assignment]
                conn, peer, server.trusted_proxies, server.proxy_required,
                self.tls.config.handshake_timeout,
            )
            if peer is None:
                stats.error(transport, "proxy")
                return
            shaken = await self._handshake(conn)
            if shaken is None:
                return
            reader, writer, client_id = shaken
            self._writers.add(writer)
            await self.handler(reader, writer, peer, client_id)
        except asyncio.CancelledError:
            pass  # shutdown: end quietly
        except Exception:
            log.exception("%s connection from %s failed", transport, peer[:1])
        finally:
            if writer is not None:
                self._writers.discard(writer)
                writer.close()
            else:
                conn.close()
            stats.open[transport] -= 1

    async def _handshake(
        self, conn: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str | None] | None:
        """The TLS handshake on an accepted socket: its streams and the ClientID of the
        server name (None: none), or None when it failed (counted)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**16)
        protocol = asyncio.StreamReaderProtocol(reader)
        refused = self.tls.refused_names
        limit = self.tls.config.handshake_timeout
        try:
            # Our own deadline: the event loop's (a backstop here) ends in a
            # ConnectionAbortedError that looks like any other failure.
            async with asyncio.timeout(limit):
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    conn,
                    ssl=self.tls.context(self.transport),
                    ssl_handshake_timeout=limit + 1.0,
                )
        except TimeoutError:
            self.stats.error(self.transport, "handshake_timeout")
            return None
        except (ssl.SSLError, ConnectionError, OSError, EOFError) as exc:
            kind = "server_name" if self.tls.refused_names != refused else "handshake"
            self.stats.error(self.transport, kind)
            log.debug("%s handshake failed: %r", self.transport, exc)
            return None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        obj = writer.get_extra_info("ssl_object")
        resumed = bool(obj is not None and obj.session_reused)
        key = (self.transport, resumed)
        self.stats.handshakes[key] = self.stats.handshakes.get(key, 0) + 1
        return reader, writer, getattr(obj, CLIENT_ID_ATTRIBUTE, None)

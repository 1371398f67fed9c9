"""UDP and TCP listeners (asyncio) on every configured address, IPv4 and IPv6.

UDP goes through the C fast path (`fastpath.py`, recvmmsg/sendmmsg batches, cache hits
and blocks answered in C) when the extension is built, else (and when the query log is
on: C writes no log lines) through an asyncio datagram endpoint. Either way what needs
Python goes through `handle_datagram` -> `Resolver.handle`: cache hits, blocks and errors
are answered without creating a task; only upstream queries become tasks.

TCP runs the stream loop DoT shares (`stream.serve_stream`): 2-byte length framing
(RFC 1035 4.2.2), many queries per connection, pipelined (answers to upstream queries are
sent as they arrive, so possibly out of order), until the client closes or stays idle for
`tcp_idle_timeout` seconds (RFC 7766). `answer` and `answer_later` are what every stream
transport (TCP, DoT, DoH) calls for a query.

Nothing a client sends can crash the server: an exception while handling a query is
logged and answered with SERVFAIL, and the loop carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from dns_resolver.fast import fastpath
from dns_resolver.fast.fastpath import UdpFastPath
from dns_resolver.resolver import Pending, Resolver
from dns_resolver.transports import proxy_protocol
from dns_resolver.transports.proxy_protocol import ProxyError
from dns_resolver.transports.stream import serve_stream
from dns_resolver.transports.streampath import TcpFastPath

log = logging.getLogger(__name__)

RCVBUF = 4 * 1024 * 1024  # the 208 KB default overflows with a few hundred queries in flight
TCP_BACKLOG = 128
MAX_UDP_INFLIGHT = 10_000  # UDP queries waiting for an upstream, across all listeners
TCP_PIPELINE = 32  # upstream queries in flight per TCP connection


def bind(host: str, port: int, kind: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking socket of `kind` bound to host:port. Raises OSError naming the
    address (`cannot listen on HOST:PORT: REASON`), as every listener reports it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if reuse_port:
            # Worker processes share the port; the kernel spreads clients across them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Let "::" and "0.0.0.0" be configured side by side.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if self.transport is not None:
            self.server.handle_datagram(data, addr, self._send)

    def _send(self, out: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (the client went away): nothing to do.
        log.debug("UDP error: %s", exc)


class DnsServer:
    """Listens on `listen` (host, port) pairs over UDP and TCP and answers with `resolver`."""

    def __init__(
        self,
        resolver: Resolver,
        listen: Sequence[tuple[str, int]],
        *,
        tcp_idle_timeout: float = 10.0,
        tcp_max_connections: int = 4096,
        tcp_max_inflight: int = 32,
        fast_path: bool = True,
        reuse_port: bool = False,
        trusted_proxies: Sequence[proxy_protocol.Network] = (),
        proxy_required: bool = False,
    ) -> None:
        self.resolver = resolver
        self.listen = list(listen)
        self.tcp_idle_timeout = tcp_idle_timeout
        # PROXY protocol headers are taken from these peers only (proxy_protocol.py).
        self.trusted_proxies = tuple(trusted_proxies)
        self.proxy_required = proxy_required
        self.reuse_port = reuse_port
        self.fast: UdpFastPath | None = None
        # TCP from the C stream loop (streampath.py) when the fast path serves UDP.
        self.stream: TcpFastPath | None = None
        if fast_path and fastpath.available():
            self.fast = UdpFastPath(self, resolver.udp_size)
            if resolver.metrics is not None:
                resolver.metrics.registry.register(self.fast)
            # PROXY headers are read by the asyncio TCP path only: with trusted proxies,
            # TCP is served from there.
            if TcpFastPath.available() and not self.trusted_proxies:
                self.stream = TcpFastPath(
                    self.fast, tcp_idle_timeout, tcp_max_connections, tcp_max_inflight
                )
                if resolver.metrics is not None:
                    resolver.metrics.registry.register(self.stream)
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}
        self.addresses: list[tuple[str, int]] = []

    def set_tcp_limits(self, idle: float, max_connections: int, max_inflight: int) -> None:
        """New TCP limits (a config reload), for the connections opened from now on; the
        idle time applies at once."""
        self.tcp_idle_timeout = idle
        if self.stream is not None:
            self.stream.set_limits(idle, max_connections, max_inflight)

    def handle_datagram(
        self,
        data: bytes,
        addr: tuple,
        send: Callable[[bytes, tuple], None],  # type: ignore[type-arg]
    ) -> bytes | Pending | None:
        """Answer one UDP query through the Python chain; `send(out, addr)` sends.

        Returns what `Resolver.handle` made of it (the fast path learns from blocks).
        """
        resolver = self.resolver
        try:
            out = resolver.handle(data, addr[0], False)
        except Exception:
            log.exception("error handling a UDP query from %s", addr[0])
            out = resolver.servfail_for(data)
        if out is None:
            return None
        if isinstance(out, Pending):
            self.handle_pending(out, data, addr, send)
        else:
            send(out, addr)
            self.tap(data, out, addr, "udp")
        return out

    def answer(
        self,
        data: bytes,
        peer: tuple,  # type: ignore[type-arg]
        transport: str,
        client_id: str | None = None,
        charged: bool = False,
    ) -> bytes | Pending | None:
        """`Resolver.handle` for a stream transport's query from `peer`: an answer (copied
        to dnstap), a `Pending` for `answer_later`, or None for bytes that are not DNS.
        An exception is logged and answered with SERVFAIL. `charged`: the C stream loop
        charged it to the rate limiter already."""
        try:
            out = self.resolver.handle(
                data,
                peer[0] if peer else "",
                True,
                transport=transport,
                client_id=client_id,
                charged=charged,
            )
        except Exception:
            log.exception("error handling a %s query from %s", transport, peer[:1])
            out = self.resolver.servfail_for(data)
        if isinstance(out, bytes):
            self.tap(data, out, peer, transport)
        return out

    async def answer_later(
        self, pending: Pending, data: bytes, peer: tuple, transport: str  # type: ignore[type-arg]
    ) -> bytes | None:
        """The answer to a query `answer` left pending (copied to dnstap); SERVFAIL when
        resolving it raised."""
        try:
            out: bytes | None = await self.resolver.resolve(pending)
        except Exception:
            log.exception("error resolving %s for %s", pending.query.qname, peer[:1])
            out = self.resolver.servfail_for(data)
        self.tap(data, out, peer, transport, pending)
        return out

    def tap(
        self,
        data: bytes,
        out: bytes | None,
        addr: tuple,  # type: ignore[type-arg]
        protocol: str,
        pending: Pending | None = None,
    ) -> None:
        """Copy a client exchange answered by the Python chain to dnstap, if it is on."""
        tap = self.resolver.dnstap
        if tap is None or not addr:
            return
        received = time.time()
        if pending is not None:
            received -= time.perf_counter() - pending.started
        option = self.resolver.tap_option(out) if out is not None else b""
        tap.client(data, out, addr[0], addr[1], protocol, received, option)

    def handle_pending(
        self,
        pending: Pending,
        data: bytes,
        addr: tuple,  # type: ignore[type-arg]
        send: Callable[[bytes, tuple], None],  # type: ignore[type-arg]
        resolve: Callable[[Pending], Awaitable[bytes]] | None = None,
    ) -> None:
        """Answer `pending` when `resolve(pending)` (default `Resolver.resolve`) is done."""
        if len(self._tasks) >= MAX_UDP_INFLIGHT:
            # Overload (a flood of misses, a dead upstream): shed load rather than queue
            # without bound; the client will retry.
            log.debug("dropping a query from %s: %d in flight", addr[0], MAX_UDP_INFLIGHT)
            return
        self.spawn(self._answer_later(pending, data, addr, send, resolve or self.resolver.resolve))

    async def _answer_later(
        self,
        pending: Pending,
        data: bytes,
        addr: tuple,  # type: ignore[type-arg]
        send: Callable[[bytes, tuple], None],  # type: ignore[type-arg]
        resolve: Callable[[Pending], Awaitable[bytes]],
    ) -> None:
        try:
            out: bytes | None = await resolve(pending)
        except Exception:
            log.exception("error resolving %s for %s", pending.query.qname, addr[0])
            out = self.resolver.servfail_for(data)
        if out is not None:
            send(out, addr)
        self.tap(data, out, addr, "udp", pending)

    def spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Bind every address (UDP and TCP on the same port). Raises OSError naming it."""
        loop = asyncio.get_running_loop()
        for host, port in self.listen:
            try:
                tcp_sock = bind(host, port, socket.SOCK_STREAM, self.reuse_port)
                # Port 0 (tests): UDP takes the port the kernel gave TCP.
                port = tcp_sock.getsockname()[1]
                udp_sock = bind(host, port, socket.SOCK_DGRAM, self.reuse_port)
            except OSError:
                await self.stop()
                raise
            if self.fast is not None:
                self.fast.attach(udp_sock)
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), sock=udp_sock
                )
                self._udp.append(transport)  # type: ignore[arg-type]
            tcp_sock.listen(TCP_BACKLOG)
            if self.stream is not None:
                self.stream.attach(tcp_sock)
            else:
                self._tcp.append(await asyncio.start_server(self._tcp_client, sock=tcp_sock))
            self.addresses.append((host, port))
            log.info("listening on %s port %d (UDP and TCP)", host, port)

    async def stop(self) -> None:
        """Close the listeners and cancel queries in flight."""
        for transport in self._udp:
            transport.close()
        if self.fast is not None:
            self.fast.close()
        if self.stream is not None:
            self.stream.close()
        for server in self._tcp:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        # Close open TCP connections: their handlers see EOF and return normally (a
        # cancelled handler would make asyncio log a spurious CancelledError).
        handlers = [t for t in self._connections.values() if t is not None]
        for writer in list(self._connections):
            writer.close()
        if handlers:
            await asyncio.wait(handlers, timeout=1.0)
        for server in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._udp.clear()
        self._tcp.clear()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections[writer] = asyncio.current_task()
        try:
            peer = writer.get_extra_info("peername") or ()
            try:
                async with asyncio.timeout(self.tcp_idle_timeout):
                    header, first = await proxy_protocol.read_header(
                        reader,
                        proxy_protocol.trusted(str(peer[0]) if peer else "", self.trusted_proxies),
                        self.proxy_required,
                    )
            except (TimeoutError, asyncio.IncompleteReadError, ProxyError) as exc:
                log.debug("TCP client %s: %s; closing", peer[:1], exc)
                writer.close()
                return
            if header is not None and header.source is not None:
                peer = header.source
            await serve_stream(
                self,
                reader,
                writer,
                peer,
                "tcp",
                first=first,
                idle_timeout=self.tcp_idle_timeout,
                max_inflight=TCP_PIPELINE,
            )
        finally:
            self._connections.pop(writer, None)

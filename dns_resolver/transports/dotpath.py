"""DoT (`server.listen_tls`) served from the C stream loop (`_stream.pyx` with `_tls.pyx`).

`DotFastPath` is the TCP stream loop's Python side (`TcpFastPath`) with a loop of its own
that speaks TLS on every listener: the `[tls]` limits, the OpenSSL context built from the
files `ServerTls` uses (rebuilt whenever `ServerTls` rebuilds its contexts: a SIGHUP, a
change on disk, a ticket key rotation), Python's answers padded as C pads its own, and
its counters in the encrypted listeners' `ListenerStats` (`filterdns_listener_*`,
`filterdns_tls_handshakes`). `dot_listeners` picks it when the fast path serves UDP, the
extensions are built and no `trusted_proxies` are set (PROXY headers are read by the
asyncio listener), and the asyncio listener (listen_tls.py) otherwise.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dns_resolver import edns
from dns_resolver.transports.certs import ServerTls
from dns_resolver.transports.listen_tls import TRANSPORT, dot_listener
from dns_resolver.transports.stream import ListenerStats, StreamListener
from dns_resolver.transports.streampath import TcpFastPath

try:
    from dns_resolver.fast._tls import TlsContext
except ImportError:  # not built: the asyncio listener serves DoT
    TlsContext = None

if TYPE_CHECKING:
    from dns_resolver.transports.server import DnsServer

log = logging.getLogger(__name__)


class DotFastPath(TcpFastPath):
    """The DoT listeners of one server, served from C (see the module's docstring)."""

    TRANSPORT = TRANSPORT
    HTTPS = False  # the TLS context's ALPN: DoT's (else DoH's)

    def __init__(self, fast: Any, tls: ServerTls, stats: ListenerStats) -> None:
        config = tls.config
        super().__init__(fast, config.idle_timeout, config.max_connections, config.max_inflight)
        self.tls = tls
        self.stats = stats
        self._contexts: object = None  # the ServerTls contexts the C context was built with
        self._counted: dict[Any, int] = {}  # C counters as last added to `stats`
        self._install()
        stats.open.setdefault(self.TRANSPORT, 0)
        stats.refresh.append(self._count)

    @staticmethod
    def available() -> bool:
        return TcpFastPath.available() and TlsContext is not None

    def _install(self) -> None:
        """The context and limits of `ServerTls` as they are now, for new connections."""
        config = self.tls.config
        cert, key = self.tls.cert_files()
        try:
            context = TlsContext(cert, key, self.HTTPS)
        except ValueError as exc:
            log.error("%s keeps its previous TLS context: %s", self.TRANSPORT, exc)
            return
        self.stream.set_tls(context, config.server_name, config.handshake_timeout, config.padding)
        self.stream.set_limits(config.idle_timeout, config.max_connections, config.max_inflight)
        self._contexts = self.tls.contexts

    def _expire(self) -> None:
        if self.tls.contexts is not self._contexts:
            self._install()
        super()._expire()

    def _send(self, cid: int, out: bytes | None) -> None:
        if out is not None and self.tls.config.padding:
            out = edns.pad(out)
        super()._send(cid, out)

    def _count(self) -> None:
        """Add what C counted since the last time to `stats` (scraped from it)."""
        stream, stats, transport = self.stream, self.stats, self.TRANSPORT
        stats.open[transport] = stats.open.get(transport, 0) + self._delta(
            "open", stream.connections
        )
        stats.accepted[transport] = stats.accepted.get(transport, 0) + self._delta(
            "accepted", stream.accepted
        )
        for kind, value in self._errors().items():
            n = self._delta(kind, value)
            if n:
                key = (transport, kind)
                stats.errors[key] = stats.errors.get(key, 0) + n
        for resumed, value in ((False, stream.handshakes_full), (True, stream.handshakes_resumed)):
            n = self._delta(resumed, value)
            if n:
                key2 = (transport, resumed)
                stats.handshakes[key2] = stats.handshakes.get(key2, 0) + n

    def _errors(self) -> dict[str, int]:
        """C's counts of closed connections, by `ListenerStats` error kind."""
        stream = self.stream
        refused = stream.refused_names
        return {
            "max_connections": stream.refused,
            "handshake": stream.handshakes_failed - refused,
            "server_name": refused,
            "handshake_timeout": stream.handshake_timeouts,
            "idle": stream.closed_idle,
            "framing": stream.closed_garbage,
        }

    def _delta(self, key: Any, value: int) -> int:
        before = self._counted.get(key, 0)
        self._counted[key] = value
        return value - before


class CDotListener:
    """One DoT address served by `DotFastPath` (the listener interface of listeners.py)."""

    transport = TRANSPORT

    def __init__(self, path: DotFastPath, host: str, port: int, reuse_port: bool) -> None:
        self.path = path
        self.host = host
        self.port = port
        self.reuse_port = reuse_port

    async def start(self) -> None:
        """Bind and listen. Raises OSError naming the address."""
        from dns_resolver.transports.server import TCP_BACKLOG, bind

        sock = bind(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        sock.listen(TCP_BACKLOG)
        sock.setblocking(False)
        self.path.attach(sock)

    async def stop(self) -> None:
        """Close every DoT connection and listener (all addresses share the loop)."""
        self.path.close()


def dot_listeners(
    server: DnsServer,
    addresses: Sequence[Any],
    tls: ServerTls,
    stats: ListenerStats,
    *,
    reuse_port: bool = False,
) -> list[StreamListener] | list[CDotListener]:
    """The listeners of `server.listen_tls` (`addresses`: host and port each), from C when
    it can serve them (see the module's docstring)."""
    if not addresses:
        return []
    if server.fast is not None and not server.trusted_proxies and DotFastPath.available():
        path = DotFastPath(server.fast, tls, stats)
        log.info("DNS over TLS is served from the C stream loop")
        return [CDotListener(path, a.host, a.port, reuse_port) for a in addresses]
    return [
        dot_listener(server, a.host, a.port, tls, stats, reuse_port=reuse_port)
        for a in addresses
    ]

"""DoH (`server.listen_https`) served from the C stream loop (`_doh.pyx`: TLS by OpenSSL,
HTTP/2 by libnghttp2).

`DohFastPath` is DoT's `DotFastPath` with DoH's loop: C answers the queries its pipeline
can (cache hits, blocks) and frames them itself. What it hands over comes back here:
- a DNS query C could not answer (with its connection and stream): resolved as over TCP,
  the response built by `DohService.reply` (padding, Cache-Control) and framed by C;
- a request C leaves to Python (an error, a path or `dns` parameter with %-escapes):
  `DohService.check` and `DohService.answer` as on the asyncio listener;
- an HTTP/1.1 connection's bytes: the asyncio listener's h11 session runs over them, its
  output written back through C.

`doh_listeners` picks it under the same conditions as DoT's (`dot_listeners`), and the
asyncio listener (listen_https.py) otherwise: `fast_path = false`, `trusted_proxies` set,
or the extension not built (no OpenSSL or nghttp2 headers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dns_resolver.resolver import Pending
from dns_resolver.transports.certs import ServerTls
from dns_resolver.transports.dotpath import CDotListener, DotFastPath
from dns_resolver.transports.listen_https import (
    TRANSPORT,
    DohService,
    Reply,
    _H1Session,
    https_listener,
)
from dns_resolver.transports.stream import ListenerStats, StreamListener

try:
    from dns_resolver.fast._doh import RELAY, RELAY_END, REQUEST, DohLoop
except ImportError:  # not built: the asyncio listener serves DoH
    DohLoop = None

if TYPE_CHECKING:
    from dns_resolver.transports.server import DnsServer

log = logging.getLogger(__name__)


class DohFastPath(DotFastPath):
    """The DoH listeners of one server, served from C (see the module's docstring)."""

    TRANSPORT = TRANSPORT
    HTTPS = True
    LOOP = DohLoop

    def __init__(self, fast: Any, tls: ServerTls, stats: ListenerStats) -> None:
        self.service = DohService(fast.server, tls, stats)
        self._relays: dict[int, asyncio.StreamReader] = {}  # HTTP/1.1 connections
        super().__init__(fast, tls, stats)

    @staticmethod
    def available() -> bool:
        return DotFastPath.available() and DohLoop is not None

    def _install(self) -> None:
        super()._install()
        self.stream.set_max_streams(self.tls.config.max_streams)

    def _errors(self) -> dict[str, int]:
        errors = super()._errors()
        del errors["framing"]  # DoH's framing errors are HTTP's
        errors["http_protocol"] = self.stream.http_errors
        errors["refused_stream"] = self.stream.refused_streams
        return errors

    def _ready(self) -> None:
        self._again = False
        self.fast.sync()
        for cid, stream, data, host, port, reason, code, head, client_id in self.stream.serve():
            peer = (host, port)
            if reason == RELAY:
                self._relay(cid, data, peer)
            elif reason == RELAY_END:
                reader = self._relays.get(cid)
                if reader is not None:
                    reader.feed_eof()
            elif reason == REQUEST:
                self._request(cid, stream, peer, head, data, code)
            else:
                self._query(cid, stream, peer, data, reason, code, client_id)

    def _query(
        self,
        cid: int,
        stream: int,
        peer: tuple[str, int],
        data: bytes,
        reason: int,
        code: int,
        client_id: str | None,
    ) -> None:
        """A query C's pipeline did not answer (charged to the rate limiter already), with
        its path's ClientID."""
        name = self.fast.reasons[reason]
        self.fast.fallbacks[name] += 1
        out = self.server.answer(data, peer, TRANSPORT, client_id, True)
        if isinstance(out, Pending):
            self.server.spawn(self._query_later(cid, stream, peer, data, out))
            return
        self._respond(cid, stream, self.service.reply(out))
        if name == "new_block" and isinstance(out, bytes):
            self.fast.learn(data, peer[0], code, out, client_id)

    async def _query_later(
        self, cid: int, stream: int, peer: tuple[str, int], data: bytes, pending: Pending
    ) -> None:
        out = await self.server.answer_later(pending, data, peer, TRANSPORT)
        self._respond(cid, stream, self.service.reply(out))

    def _request(
        self,
        cid: int,
        stream: int,
        peer: tuple[str, int],
        head: tuple[str, str, str | None],
        body: bytes,
        size: int,
    ) -> None:
        """A request C left to `DohService` (`size`: its declared or received length)."""
        method, target, content_type = head
        early = self.service.check(method, target, content_type, size)
        if early is not None:
            self._respond(cid, stream, early)
            return
        self.server.spawn(self._request_later(cid, stream, peer, head, body))

    async def _request_later(
        self,
        cid: int,
        stream: int,
        peer: tuple[str, int],
        head: tuple[str, str, str | None],
        body: bytes,
    ) -> None:
        method, target, content_type = head
        reply = await self.service.answer(peer, method, target, content_type, body)
        self._respond(cid, stream, reply)

    def _respond(self, cid: int, stream: int, reply: Reply) -> None:
        headers = [(k.encode(), v.encode()) for k, v in reply.headers]
        if self.stream.respond(cid, stream, reply.status, reply.body, headers) and not self._again:
            # Bytes read while the in-flight limit held the connection can go on now.
            self._again = True
            asyncio.get_running_loop().call_soon(self._ready)

    def _relay(self, cid: int, data: bytes, peer: tuple[str, int]) -> None:
        """HTTP/1.1 bytes of connection `cid`, for its h11 session (started at the first)."""
        reader = self._relays.get(cid)
        if reader is None:
            reader = self._relays[cid] = asyncio.StreamReader()
            self.server.spawn(self._h1(cid, reader, peer))
        reader.feed_data(data)

    async def _h1(self, cid: int, reader: asyncio.StreamReader, peer: tuple[str, int]) -> None:
        try:
            writer: Any = _RelayWriter(self.stream, cid)  # what _H1Session writes with
            await _H1Session(self.service, reader, writer, peer).run()
        finally:
            self._relays.pop(cid, None)
            self.stream.finish(cid)


class _RelayWriter:
    """What `_H1Session` writes with, for a connection C encrypts."""

    def __init__(self, stream: Any, cid: int) -> None:
        self.stream = stream
        self.cid = cid

    def write(self, data: bytes) -> None:
        self.stream.relay(self.cid, data)

    def is_closing(self) -> bool:
        return False

    async def drain(self) -> None:
        """C buffers what the client has not taken yet (it owns the socket)."""


class CDohListener(CDotListener):
    """One DoH address served by `DohFastPath`."""

    transport = TRANSPORT


def doh_listeners(
    server: DnsServer,
    addresses: Sequence[Any],
    tls: ServerTls,
    stats: ListenerStats,
    *,
    reuse_port: bool = False,
) -> list[StreamListener] | list[CDohListener]:
    """The listeners of `server.listen_https` (`addresses`: host and port each), from C
    when it can serve them (see the module's docstring)."""
    if not addresses:
        return []
    if server.fast is not None and not server.trusted_proxies and DohFastPath.available():
        path = DohFastPath(server.fast, tls, stats)
        log.info("DNS over HTTPS is served from the C stream loop")
        return [CDohListener(path, a.host, a.port, reuse_port) for a in addresses]
    return [
        https_listener(server, a.host, a.port, tls, stats, reuse_port=reuse_port)
        for a in addresses
    ]

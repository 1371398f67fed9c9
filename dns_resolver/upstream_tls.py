"""DNS over TLS upstreams (RFC 7858): one kept-open connection, queries pipelined on it.

Queries are written as they come (two-byte length, message) without waiting for earlier
answers, and answers, which may come in any order, are matched to their query by ID and
question. A connection idle for `idle_timeout` seconds is closed; one that breaks (the
server closed it, a reset) fails its queries in flight over to a new connection, once.

The certificate must chain to the system's CAs (or `[upstream] ca_file`) and be valid for
the server name after `#` (else for the IP address); anything else fails the handshake,
which is logged and counted as an error of this upstream (`certificate` or `tls`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import struct

from dns_resolver.upstream import EncryptedUpstream, UpstreamError, matches
from fdconfig.upstream import DotServer

log = logging.getLogger(__name__)


def client_context(ca_file: str) -> ssl.SSLContext:
    """A TLS client context that verifies the peer's certificate and name: against
    `ca_file` when given, else the system's CAs."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def handshake_error(upstream: str, exc: BaseException) -> UpstreamError:
    """The `UpstreamError` for a failed TLS handshake, logged as the warning it deserves
    (a wrong certificate is a misconfiguration or an attack, not a passing failure)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        kind, why = "certificate", f"certificate rejected: {exc.verify_message}"
    else:
        kind, why = "tls", f"TLS handshake failed: {exc}"
    log.warning("upstream %s: %s; not asked (no fallback to plain DNS)", upstream, why)
    return UpstreamError(kind, why)


class _Broken(Exception):
    """The connection closed or failed while a query was in flight on it."""


class _Connection:
    """One TLS connection and the queries waiting on it, by ID."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_timeout = idle_timeout
        self.pending: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._idle: asyncio.TimerHandle | None = self._loop.call_later(idle_timeout, self.close)
        self._reading = asyncio.ensure_future(self._read())

    async def ask(self, message: bytes, qid: int, question: bytes) -> bytes:
        if self.closed:
            raise _Broken("closed")
        # IDs are unique per connection so answers can be told apart.
        while qid in self.pending:
            qid = secrets.randbelow(0x10000)
            message = struct.pack("!H", qid) + message[2:]
        future: asyncio.Future[bytes] = self._loop.create_future()
        self.pending[qid] = (question, future)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self.writer.write(struct.pack("!H", len(message)) + message)
            await self.writer.drain()
            return await future
        except (OSError, RuntimeError) as exc:  # RuntimeError: a transport closing under us
            self.close()
            raise _Broken(str(exc)) from None
        finally:
            if self.pending.get(qid, (None, future))[1] is future:
                del self.pending[qid]
            if not self.pending and not self.closed:
                self._idle = self._loop.call_later(self.idle_timeout, self.close)

    async def _read(self) -> None:
        try:
            while True:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
                data = await self.reader.readexactly(length)
                if len(data) < 12:
                    continue
                rid = struct.unpack_from("!H", data)[0]
                entry = self.pending.get(rid)
                # No entry: the answer to a query that timed out here. Late, not spoofed:
                # only the authenticated server can write on this connection.
                if entry is not None and not entry[1].done() and matches(data, rid, entry[0]):
                    entry[1].set_result(data)
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(_Broken("connection closed"))
        self.writer.close()
        if self._reading is not asyncio.current_task():
            self._reading.cancel()


class TlsUpstream(EncryptedUpstream):
    """A DoT server: `tls://ADDR[:PORT]#SERVER-NAME`."""

    transport = "tls"

    def __init__(self, server: DotServer, ca_file: str, idle_timeout: float) -> None:
        super().__init__(server.address.host, server.address.port)
        self.server_name = server.server_name
        self.idle_timeout = idle_timeout
        self._label = str(server)
        self._context = client_context(ca_file)
        self._connection: _Connection | None = None
        self._opening: asyncio.Future[_Connection] | None = None

    @property
    def name(self) -> str:
        return self._label

    async def ask(self, message: bytes, qid: int, question: bytes, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                connection, fresh = await self._connect()
                try:
                    return await connection.ask(message, qid, question)
                except _Broken as exc:
                    if fresh:
                        raise UpstreamError("network", f"connection lost: {exc}") from None
                # A kept-open connection the server had closed: once more on a new one.
                connection, _ = await self._connect()
                try:
                    return await connection.ask(message, qid, question)
                except _Broken as exc:
                    raise UpstreamError("network", f"connection lost: {exc}") from None
        except TimeoutError:
            raise UpstreamError("timeout", "timeout") from None

    async def _connect(self) -> tuple[_Connection, bool]:
        """The open connection, or a new one (True) shared by every query that waits."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection, False
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening), True

    def _opened(self, opening: asyncio.Future[_Connection]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self._connection = opening.result()

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._context,
                server_hostname=self.server_name or self.host,
            )
        except ssl.SSLError as exc:
            raise handshake_error(self.name, exc) from None
        except OSError as exc:
            raise UpstreamError("network", f"cannot connect: {exc.strerror or exc}") from None
        self.connected()
        return _Connection(reader, writer, self.idle_timeout)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

"""DNS over TLS upstreams (RFC 7858): kept-open connections, queries pipelined on them.

Queries are written as they come (two-byte length, message; those of one event-loop
iteration together) without waiting for earlier answers, and answers, which may come in
any order, are matched to their query by ID and question. One connection carries the
load until `PIPELINE_DEPTH` queries wait on it; then another opens, up to
`MAX_CONNECTIONS`, each query going to the least busy. A connection idle for
`idle_timeout` seconds is closed; one that breaks (the server closed it, a reset) fails its
queries in flight over to a new connection, once.

The certificate must chain to the system's CAs (or `[upstream] ca_file`) and be valid for
the server name after `#` (else for the IP address); anything else fails the handshake,
which is logged and counted as an error of this upstream (`certificate` or `tls`).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import struct
from collections.abc import Callable

from dns_resolver.upstreams.upstream import EncryptedUpstream, UpstreamError, matches
from fdconfig.upstream import DotServer

# A new connection opens when every open one has this many queries in flight: servers work
# on a bounded number of a connection's queries at once (Unbound: 32), the rest queue.
PIPELINE_DEPTH = 32
MAX_CONNECTIONS = 8


def client_context(ca_file: str) -> ssl.SSLContext:
    """A TLS client context that verifies the peer's certificate and name: against
    `ca_file` when given, else the system's CAs."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def handshake_error(exc: BaseException) -> UpstreamError:
    """The `UpstreamError` for a failed TLS handshake (the Forwarder logs it as a warning:
    a wrong certificate is a misconfiguration or an attack, not a passing failure)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        kind, why = "certificate", f"certificate rejected: {exc.verify_message}"
    else:
        kind, why = "tls", f"TLS handshake failed: {exc}"
    return UpstreamError(kind, f"{why} (not asked: no fallback to plain DNS)")


class _Broken(Exception):
    """The connection closed or failed while a query was in flight on it."""


class _Callback:
    """A query whose answer goes to a function rather than to an awaiting coroutine (the
    fast path's relay: no task or future per query)."""

    __slots__ = ("on_answer", "on_error", "timer")

    def __init__(
        self, on_answer: Callable[[bytes], None], on_error: Callable[[UpstreamError | None], None]
    ) -> None:
        self.on_answer = on_answer
        self.on_error = on_error
        self.timer: asyncio.TimerHandle | None = None


_Waiter = asyncio.Future[bytes] | _Callback


class _Connection(asyncio.Protocol):
    """One TLS connection and the queries waiting on it, by ID.

    A protocol rather than streams: answers are cut from the received bytes and handed to
    their waiting queries in `data_received`, without a reader task waking per answer, and
    the queries of one loop iteration leave in one write (one TLS record, one syscall).
    """

    def __init__(self, idle_timeout: float, on_close: Callable[[_Connection], None]) -> None:
        self.idle_timeout = idle_timeout
        self.on_close = on_close
        self.pending: dict[int, tuple[bytes, _Waiter]] = {}
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._received = bytearray()
        self._outgoing: list[bytes] = []
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._idle = self._loop.call_later(self.idle_timeout, self.close)

    def send(self, message: bytes, qid: int, question: bytes, waiter: _Waiter) -> int:
        """Queue `message` for the next write; returns the ID it went with."""
        # IDs are unique per connection so answers can be told apart.
        while qid in self.pending:
            qid = secrets.randbelow(0x10000)
            message = struct.pack("!H", qid) + message[2:]
        self.pending[qid] = (question, waiter)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(struct.pack("!H", len(message)) + message)
        return qid

    def forget(self, qid: int, waiter: _Waiter) -> None:
        """`waiter` gave up (a timeout): its ID is free again."""
        if self.pending.get(qid, (None, None))[1] is waiter:
            del self.pending[qid]
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self.pending and not self.closed and self._idle is None:
            self._idle = self._loop.call_later(self.idle_timeout, self.close)

    async def ask(self, message: bytes, qid: int, question: bytes) -> bytes:
        if self.closed:
            raise _Broken("closed")
        future: asyncio.Future[bytes] = self._loop.create_future()
        qid = self.send(message, qid, question, future)
        try:
            return await future
        finally:
            self.forget(qid, future)

    def _flush(self) -> None:
        if self._transport is not None and not self.closed and self._outgoing:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        buf = self._received
        buf += data
        start = 0
        pending = self.pending
        while len(buf) - start >= 2:
            end = start + 2 + (buf[start] << 8 | buf[start + 1])
            if end > len(buf):
                break
            answer = bytes(buf[start + 2 : end])
            start = end
            if len(answer) < 12:
                continue
            rid = answer[0] << 8 | answer[1]
            entry = pending.get(rid)
            # No entry: the answer to a query that timed out here. Late, not spoofed:
            # only the authenticated server can write on this connection.
            if entry is None or not matches(answer, rid, entry[0]):
                continue
            del pending[rid]
            waiter = entry[1]
            if isinstance(waiter, _Callback):
                if waiter.timer is not None:
                    waiter.timer.cancel()
                waiter.on_answer(answer)
            elif not waiter.done():
                waiter.set_result(answer)
        del buf[:start]
        self._maybe_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
        waiting = list(self.pending.values())
        self.pending.clear()
        if self._transport is not None:
            self._transport.close()
        self.on_close(self)
        for _, waiter in waiting:
            if isinstance(waiter, _Callback):
                if waiter.timer is not None:
                    waiter.timer.cancel()
                waiter.on_error(None)  # broken: the caller asks again on a new connection
            elif not waiter.done():
                waiter.set_exception(_Broken("connection closed"))


class TlsUpstream(EncryptedUpstream):
    """A DoT server: `tls://ADDR[:PORT]#SERVER-NAME`."""

    transport = "tls"

    def __init__(self, server: DotServer, ca_file: str, idle_timeout: float) -> None:
        super().__init__(server.address.host, server.address.port)
        self.server_name = server.server_name
        self.idle_timeout = idle_timeout
        self._label = str(server)
        self._context = client_context(ca_file)
        self._connections: list[_Connection] = []  # open, oldest first
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

    def submit(
        self,
        message: bytes,
        qid: int,
        question: bytes,
        timeout: float,
        on_answer: Callable[[bytes], None],
        on_error: Callable[[UpstreamError | None], None],
    ) -> bool:
        """Send on an open connection now, the answer to `on_answer`; a timeout goes to
        `on_error`, and so does a broken connection, as None (then `ask` again: it opens a
        new one). False, nothing sent, when no connection is ready: use `ask`."""
        connections = self._connections
        if not connections:
            return False
        best = min(connections, key=lambda c: len(c.pending)) if len(connections) > 1 else (
            connections[0]
        )
        if len(best.pending) >= PIPELINE_DEPTH and len(connections) < MAX_CONNECTIONS:
            return False
        callback = _Callback(on_answer, on_error)
        sent = best.send(message, qid, question, callback)
        callback.timer = asyncio.get_running_loop().call_later(
            timeout, self._expired, best, sent, callback
        )
        return True

    @staticmethod
    def _expired(connection: _Connection, qid: int, callback: _Callback) -> None:
        connection.forget(qid, callback)
        callback.on_error(UpstreamError("timeout", "timeout"))

    async def _connect(self) -> tuple[_Connection, bool]:
        """The open connection with the fewest queries in flight; a new one (True) when
        there is none, or every one is busy and there may be more."""
        connections = self._connections
        if connections:
            best = min(connections, key=lambda c: len(c.pending))
            if (
                len(best.pending) < PIPELINE_DEPTH
                or self._opening is not None
                or len(connections) >= MAX_CONNECTIONS
            ):
                return best, False
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening), True

    def _opened(self, opening: asyncio.Future[_Connection]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            connection = opening.result()
            if not connection.closed:
                self._connections.append(connection)

    def _closed(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.idle_timeout, self._closed),
                self.host,
                self.port,
                ssl=self._context,
                server_hostname=self.server_name or self.host,
            )
        except ssl.SSLError as exc:
            raise handshake_error(exc) from None
        except OSError as exc:
            raise UpstreamError("network", f"cannot connect: {exc.strerror or exc}") from None
        self.connected()
        return connection

    async def close(self) -> None:
        for connection in list(self._connections):
            connection.close()

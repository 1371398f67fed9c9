"""Forwarding to upstream servers: UDP with TCP fallback, failover or parallel, health.

Anti-spoofing (RFC 5452): every upstream query gets a random ID and a fresh socket, so a
random source port from the kernel; an answer whose source, ID or question does not match
is discarded and we keep waiting until the timeout. The socket is connected, so the
kernel drops datagrams from any other address or port and reports a closed port at once
(ECONNREFUSED), which makes failover past a dead upstream fast.

SERVFAIL, REFUSED, FORMERR and NOTIMP from an upstream count as failures: the next
upstream is asked. An upstream failing `max_failures` times in a row is skipped for
`retry_dead_after` seconds, then tried again; when all are dead, all are tried.

Encrypted upstreams (`EncryptedUpstream`: DoT in upstream_tls.py, DoH in upstream_https.py)
keep a connection open and ask over it; they share the health, failover and strategies
here. A failed TLS handshake or certificate is an error of that upstream like any other,
and the query never goes anywhere in plain text because of it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from dns_resolver import edns, wire

if TYPE_CHECKING:
    from fdconfig.upstream import Address, DohServer, DotServer, UpstreamConfig

log = logging.getLogger(__name__)

_BAD_RCODES = frozenset({wire.SERVFAIL, wire.REFUSED, wire.FORMERR, wire.NOTIMP})
_RECV_SIZE = 65535
_TLS_FAILURES = frozenset({"certificate", "tls"})  # logged as warnings: not passing troubles


class UpstreamObserver(Protocol):
    """The events the forwarder reports (`dns_resolver.observability.metrics.Metrics` has these)."""

    def upstream_query(self, upstream: str, seconds: float | None = None) -> None: ...

    def upstream_error(self, upstream: str, kind: str) -> None: ...

    def upstream_healthy(self, upstream: str, healthy: bool) -> None: ...

    def upstream_connected(self, upstream: str, transport: str) -> None: ...


class UpstreamError(Exception):
    """One attempt failed. `kind` is a metrics label: timeout, refused, servfail, network;
    for encrypted upstreams also certificate, tls and http."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Upstream:
    """One upstream server and its health."""

    transport = "udp"  # plain DNS: UDP, TCP after a truncated answer
    encrypted = False

    def __init__(self, host: str, port: int = 53) -> None:
        self.host = host
        self.port = port
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.failures = 0
        self.dead_until = 0.0

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else (
            f"{self.host}:{self.port}"
        )

    def alive(self, now: float) -> bool:
        return now >= self.dead_until

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, failures={self.failures})"


class EncryptedUpstream(Upstream):
    """An upstream asked over a kept-open encrypted connection, never in plain text."""

    encrypted = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.observer: UpstreamObserver | None = None  # set by the Forwarder

    async def ask(self, message: bytes, qid: int, question: bytes, timeout: float) -> bytes:
        """Send `message` (ID `qid`) and return the matching answer within `timeout` s.

        A connection found broken is replaced and the query sent once more on the new one.

        Raises:
            UpstreamError: timeout, network, certificate, tls, http, garbage.
        """
        raise NotImplementedError

    def submit(
        self,
        message: bytes,
        qid: int,
        question: bytes,
        timeout: float,
        on_answer: Callable[[bytes], None],
        on_error: Callable[[UpstreamError | None], None],
    ) -> bool:
        """Like `ask` without a task per query, when the transport can (DoT): True when
        sent, the answer then going to `on_answer`, a failure to `on_error` (None: the
        connection broke, `ask` again). False: nothing sent, use `ask`."""
        return False

    async def close(self) -> None:
        """Close the open connections (the next `ask` opens new ones)."""

    def connected(self) -> None:
        """A new connection is up: counted per upstream and transport."""
        if self.observer is not None:
            self.observer.upstream_connected(self.name, self.transport)


def upstreams_of(
    config: UpstreamConfig, servers: Sequence[Address | DotServer | DohServer] | None = None
) -> list[Upstream]:
    """The `Upstream`s of `servers` (default: `[upstream] servers`): plain, DoT and DoH, in
    the configured order, with `[upstream]`'s CA, idle time and bootstrap servers."""
    from fdconfig.upstream import Address, DotServer

    out: list[Upstream] = []
    bootstrap: Forwarder | None = None
    for server in config.servers if servers is None else servers:
        if isinstance(server, Address):
            out.append(Upstream(server.host, server.port))
        elif isinstance(server, DotServer):
            from dns_resolver.upstreams.upstream_tls import TlsUpstream

            out.append(TlsUpstream(server, config.ca_file, config.idle_timeout))
        else:
            from dns_resolver.upstreams.upstream_https import HttpsUpstream

            if bootstrap is None and config.bootstrap:
                # Plain DNS to the configured servers only: never through ourselves.
                bootstrap = Forwarder(
                    [(a.host, a.port) for a in config.bootstrap],
                    timeout=config.timeout,
                    max_failures=config.max_failures,
                    retry_dead_after=config.retry_dead_after,
                )
            out.append(HttpsUpstream(server, config.ca_file, config.idle_timeout, bootstrap))
    return out


def build_query(query: wire.Query, qid: int, udp_size: int) -> bytes:
    """Our query to an upstream for a client's query.

    The client's question (letter case kept), RD and CD bits; our own OPT with the client's
    DO bit. Client EDNS options are hop-by-hop and not forwarded.
    """
    flags = query.flags & (wire.RD | wire.CD)
    return (
        wire.header(qid, flags, 1, 0, 0, 1)
        + query.question
        + edns.build_opt(udp_size, do=query.do)
    )


def matches(response: bytes, qid: int, question: bytes) -> bool:
    """True when `response` answers our query: QR set, same ID, same question (any case)."""
    if len(response) < 12 + len(question):
        return False
    rid, flags, qdcount = struct.unpack_from("!HHH", response, 0)
    if rid != qid or not flags & wire.QR or qdcount != 1:
        return False
    return response[12 : 12 + len(question)].lower() == question.lower()


def _parses(data: bytes) -> bool:
    """True when `data` looks like a DNS response (to tell spoofing from garbage)."""
    if len(data) < 12 or not data[2] & 0x80:
        return False
    try:
        wire.parse_question(data)
    except wire.WireError:
        return False
    return True


_ANSWERED: ContextVar[list[tuple[str, float]] | None] = ContextVar("answered", default=None)


def note_answers() -> list[tuple[str, float]]:
    """From now on in the calling task, each upstream that answers is appended to the list
    returned, as (name, seconds): the query log's upstream and its latency. A list, so
    the tasks of the parallel strategy (which copy the context) append to it too."""
    found: list[tuple[str, float]] = []
    _ANSWERED.set(found)
    return found


class Forwarder:
    """Sends queries upstream with a strategy and health tracking."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int] | Upstream],
        *,
        strategy: str = "failover",
        timeout: float = 2.0,
        max_failures: int = 3,
        retry_dead_after: float = 30.0,
        udp_size: int = edns.DEFAULT_UDP_PAYLOAD,
        observer: UpstreamObserver | None = None,
    ) -> None:
        if strategy not in ("failover", "parallel"):
            raise ValueError(f"unknown upstream strategy {strategy!r}")
        self.upstreams = [s if isinstance(s, Upstream) else Upstream(*s) for s in servers]
        for upstream in self.upstreams:
            if isinstance(upstream, EncryptedUpstream):
                upstream.observer = observer
        self.strategy = strategy
        self.timeout = timeout
        self.max_failures = max_failures
        self.retry_dead_after = retry_dead_after
        self.udp_size = udp_size
        self.observer = observer
        # dns_resolver.observability.dnstap.Dnstap when it wants forwarder messages (App sets it).
        self.tap: Any = None

    async def close(self) -> None:
        """Close the connections kept open to encrypted upstreams."""
        for upstream in self.upstreams:
            if isinstance(upstream, EncryptedUpstream):
                await upstream.close()

    def candidates(self) -> list[Upstream]:
        """Upstreams to try, in order: the live ones, or all when none is live."""
        now = time.monotonic()
        live = [u for u in self.upstreams if u.alive(now)]
        return live or list(self.upstreams)

    async def resolve(self, query: wire.Query) -> bytes | None:
        """A good answer (NOERROR/NXDOMAIN, any TC resolved over TCP) or None."""
        candidates = self.candidates()
        if not candidates:
            return None
        if self.strategy == "parallel" and len(candidates) > 1:
            return await self._parallel(query, candidates)
        for upstream in candidates:
            answer = await self._attempt(upstream, query)
            if answer is not None:
                return answer
        return None

    async def _parallel(self, query: wire.Query, candidates: list[Upstream]) -> bytes | None:
        tasks = [asyncio.ensure_future(self._attempt(u, query)) for u in candidates]
        try:
            for next_done in asyncio.as_completed(tasks):
                answer = await next_done
                if answer is not None:
                    return answer
            return None
        finally:
            for task in tasks:
                task.cancel()

    async def resume(
        self, query: wire.Query, tried: Upstream, response: bytes | None
    ) -> bytes | None:
        """Go on where the C fast path's UDP query to `tried` stopped: with its `response`
        (truncated: TCP to `tried`; an error rcode: a failure), or without one (a timeout
        or a closed port, already recorded with `record_failure`), then the other
        candidates, as `resolve` would have."""
        if response is not None:
            answer = await self._attempt(tried, query, response)
            if answer is not None:
                return answer
        for upstream in self.candidates():
            if upstream is not tried:
                answer = await self._attempt(upstream, query)
                if answer is not None:
                    return answer
        return None

    async def _attempt(
        self, upstream: Upstream, query: wire.Query, udp_response: bytes | None = None
    ) -> bytes | None:
        """One try against one upstream; records health and the observer event."""
        started = time.monotonic()
        try:
            answer = await self.exchange(upstream, query, udp_response)
        except (UpstreamError, OSError) as exc:
            if isinstance(exc, UpstreamError):
                kind, error = exc.kind, str(exc)
            else:
                kind, error = "network", f"{type(exc).__name__}: {exc.strerror or exc}"
            self.record_failure(upstream, kind, error)
            return None
        elapsed = time.monotonic() - started
        if self.observer is not None:
            self.observer.upstream_query(upstream.name, elapsed)
        noted = _ANSWERED.get()
        if noted is not None:
            noted.append((upstream.name, elapsed))
        self.record_success(upstream)
        return answer

    def record_failure(self, upstream: Upstream, kind: str, error: str) -> None:
        """Count a failed exchange with `upstream` (here or in the C fast path) and mark
        it dead after `max_failures` in a row. `kind` is an UpstreamError kind."""
        observer = self.observer
        upstream.failures += 1
        if observer is not None:
            observer.upstream_query(upstream.name)
            observer.upstream_error(upstream.name, kind)
        if upstream.failures >= self.max_failures:
            if upstream.alive(time.monotonic()) and observer is not None:
                observer.upstream_healthy(upstream.name, False)
            upstream.dead_until = time.monotonic() + self.retry_dead_after
            log.warning(
                "upstream %s marked dead for %.0fs after %d failures (%s)",
                upstream.name, self.retry_dead_after, upstream.failures, error,
            )
        elif kind in _TLS_FAILURES:
            log.warning("upstream %s failed: %s", upstream.name, error)
        else:
            log.info("upstream %s failed: %s", upstream.name, error)

    def record_success(self, upstream: Upstream) -> None:
        """`upstream` answered: it is healthy again."""
        if self.observer is not None and upstream.failures >= self.max_failures:
            self.observer.upstream_healthy(upstream.name, True)
        upstream.failures = 0
        upstream.dead_until = 0.0

    async def exchange(
        self, upstream: Upstream, query: wire.Query, udp_response: bytes | None = None
    ) -> bytes:
        """Ask one upstream over UDP (unless `udp_response` is its answer already, from the
        C fast path), then TCP when the answer is truncated; an encrypted one over its
        connection."""
        qid = secrets.randbelow(0x10000)
        message = build_query(query, qid, self.udp_size)
        sent = time.time()
        if udp_response is not None:
            response = udp_response  # C's answer (for an encrypted upstream, relayed)
        elif isinstance(upstream, EncryptedUpstream):
            response = await upstream.ask(message, qid, query.question, self.timeout)
        else:
            response = await self._udp(upstream, message, qid, query.question)
        tcp = bool(response[2] & (wire.TC >> 8)) and not upstream.encrypted
        if tcp:
            response = await self._tcp(upstream, message, qid, query.question)
        # C wrote the messages of its own exchange (udp_response); TCP after it is ours.
        if self.tap is not None and (udp_response is None or tcp):
            protocol = "tcp" if tcp and upstream.transport == "udp" else upstream.transport
            self.tap.forwarder(message, response, upstream.host, upstream.port, protocol, sent)
        rcode = wire.rcode_of(response)
        if rcode in _BAD_RCODES:
            kind = "refused" if rcode == wire.REFUSED else "servfail"
            raise UpstreamError(kind, f"answered with rcode {rcode}")
        return response

    async def _udp(self, upstream: Upstream, message: bytes, qid: int, question: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        # A fresh socket per query: a new random source port each time (RFC 5452 9.2).
        sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((upstream.host, upstream.port))
            await loop.sock_sendall(sock, message)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise UpstreamError("timeout", "timeout")
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, _RECV_SIZE), remaining)
                except TimeoutError:
                    raise UpstreamError("timeout", "timeout") from None
                if not matches(data, qid, question):
                    if _parses(data):
                        self._discarded(upstream, "spoofed", "ID or question differs")
                    else:
                        self._discarded(upstream, "garbage", "not a DNS response")
                    continue
                return data
        finally:
            sock.close()

    async def _tcp(self, upstream: Upstream, message: bytes, qid: int, question: bytes) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
                try:
                    writer.write(struct.pack("!H", len(message)) + message)
                    await writer.drain()
                    while True:
                        length = struct.unpack("!H", await reader.readexactly(2))[0]
                        data = await reader.readexactly(length)
                        if matches(data, qid, question):
                            return data
                        self._discarded(upstream, "spoofed", "TCP answer does not match")
                finally:
                    writer.close()
        except TimeoutError:
            raise UpstreamError("timeout", "TCP timeout") from None
        except asyncio.IncompleteReadError:
            raise UpstreamError("network", "TCP connection closed mid-answer") from None

    def _discarded(self, upstream: Upstream, kind: str, why: str) -> None:
        """An answer we do not trust: log and count it, and keep waiting for the real one."""
        log.warning("discarded an answer from %s: %s", upstream.name, why)
        if self.observer is not None:
            self.observer.upstream_error(upstream.name, kind)

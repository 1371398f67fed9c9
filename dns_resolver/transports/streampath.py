"""The Python side of the TCP stream loop (`_stream.pyx`): listeners, hand-over, expiry.

`TcpFastPath` serves the TCP listeners of a `DnsServer` from C with the UDP fast path's
`FastPath` (one cache, one set of block answers, ACL, policies, rate limiter, query log
and dnstap buffers). The event loop watches the stream loop's epoll descriptor; what C
does not answer comes back here and goes through `Resolver.handle` / `resolve` as on the
asyncio listener, its answer written back through C.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

from dns_resolver.resolver import Pending

try:
    from dns_resolver.fast._stream import StreamLoop
except ImportError:  # not built: the asyncio listener serves TCP
    StreamLoop = None


EXPIRY_SECONDS = 0.25  # how often idle connections are looked for (at most this late)


class TcpFastPath:
    """Serves TCP listeners through the C stream loop.

    Args:
        fast: the server's `UdpFastPath` (its `FastPath`, list sync and block learning).
        idle: seconds a connection may go without a complete query (none in flight).
        max_connections: open connections per listener; beyond, new ones are closed.
        max_inflight: queries per connection handed to Python at once; beyond, that
            connection's further queries wait.
    """

    TRANSPORT = "tcp"
    LOOP: Any = StreamLoop  # the C loop class (DoH's extends it)

    def __init__(
        self, fast: Any, idle: float, max_connections: int, max_inflight: int
    ) -> None:
        if StreamLoop is None:
            raise RuntimeError("the stream loop extension is not built")
        self.fast = fast
        self.server = fast.server
        self.stream = self.LOOP(fast.fp, idle, max_connections, max_inflight)
        self._socks: list[socket.socket] = []
        self._expiry: asyncio.TimerHandle | None = None
        self._again = False  # a serve() is scheduled for frames an answer let go on

    @staticmethod
    def available() -> bool:
        return StreamLoop is not None

    def set_limits(self, idle: float, max_connections: int, max_inflight: int) -> None:
        self.stream.set_limits(idle, max_connections, max_inflight)

    def attach(self, sock: socket.socket) -> None:
        """Serve `sock` (bound, listening, non-blocking) from the running loop."""
        loop = asyncio.get_running_loop()
        self.stream.add_listener(sock.fileno())
        self._socks.append(sock)
        if len(self._socks) == 1:
            loop.add_reader(self.stream.fileno, self._ready)
            self._expiry = loop.call_later(EXPIRY_SECONDS, self._expire)

    def close(self) -> None:
        """Close every connection and the listeners."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._socks and self.stream.fileno >= 0:
            asyncio.get_running_loop().remove_reader(self.stream.fileno)
        self.stream.close_all()
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    def _expire(self) -> None:
        self.stream.expire()
        self._expiry = asyncio.get_running_loop().call_later(EXPIRY_SECONDS, self._expire)

    def _ready(self) -> None:
        self._again = False
        self.fast.sync()
        rest = self.stream.serve()
        if not rest:
            return
        fallbacks = self.fast.fallbacks
        reasons = self.fast.reasons
        for cid, data, host, port, reason, code, client_id in rest:
            name = reasons[reason]
            fallbacks[name] += 1
            out = self._handle(cid, data, (host, port), client_id)
            if name == "new_block" and isinstance(out, bytes):
                self.fast.learn(data, host, code, out, client_id)

    def _handle(
        self,
        cid: int,
        data: bytes,
        peer: tuple[str, int],
        client_id: str | None,
    ) -> bytes | Pending | None:
        """One query C handed over (C charged it to the rate limiter's TCP bucket)."""
        out = self.server.answer(data, peer, self.TRANSPORT, client_id, True)
        if out is None:
            self.stream.drop(cid)  # garbage on a stream: the framing can't be trusted
        elif isinstance(out, Pending):
            self.server.spawn(self._answer_later(cid, out, data, peer))
        else:
            self._send(cid, out)
        return out

    async def _answer_later(
        self, cid: int, pending: Pending, data: bytes, peer: tuple[str, int]
    ) -> None:
        self._send(cid, await self.server.answer_later(pending, data, peer, self.TRANSPORT))

    def collect(self) -> Iterator[Any]:
        """Prometheus families of the TCP connections served from C."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stream = self.stream
        yield GaugeMetricFamily(
            "filterdns_tcp_connections", "Open client TCP connections (C stream loop).",
            value=stream.connections,
        )
        yield CounterMetricFamily(
            "filterdns_tcp_connections_accepted", "Client TCP connections taken.",
            value=stream.accepted,
        )
        yield CounterMetricFamily(
            "filterdns_tcp_connections_refused",
            "Client TCP connections closed at once: tcp_max_connections were open.",
            value=stream.refused,
        )
        family = CounterMetricFamily(
            "filterdns_tcp_connections_closed",
            "Client TCP connections the server closed: idle (tcp_idle_timeout), or garbage "
            "(bytes that are not a query).",
            labels=["reason"],
        )
        family.add_metric(["idle"], stream.closed_idle)
        family.add_metric(["garbage"], stream.closed_garbage)
        yield family

    def _send(self, cid: int, out: bytes | None) -> None:
        if self.stream.answer(cid, out) and not self._again:
            # Frames held back by the in-flight limit can go on: no socket event will
            # say so (they were read already).
            self._again = True
            asyncio.get_running_loop().call_soon(self._ready)

"""Forwarding cache misses from the C fast path: the upstream socket pool and hand-overs.

A miss that needs nothing but the upstream (not blocked, passed by the text rules if the
lists have any, no policy that wants Python) is sent upstream by C itself
(`FastPath.set_upstream`): its answer is matched, inspected, cached and sent back without
a Python object per query. This module gives C what it needs and takes back what C does
not finish:

- **Sockets.** `POOL_SIZE` UDP sockets connected to the upstream the Python `Forwarder`
  would ask first (`Forwarder.candidates()[0]`), each with a kernel-chosen random source
  port; C spreads batches over them and gives every query a random ID that is not in
  flight on its socket. One socket is replaced every `ROTATE_SECONDS`, so a port lives a
  few seconds (RFC 5452: ID and port are both unguessable to an off-path attacker; the
  Python path takes a fresh port per query, which costs a socket per query). A retired
  socket is still read until its last answer is in or has timed out, then closed. Being
  connected, a socket only receives datagrams from the upstream's address and port.
- **Failover.** Upstream health stays with the `Forwarder`: a query C gave up on (timeout,
  a closed port) counts as a failure of that upstream, and the query runs through the
  Python chain, which asks the next upstream and, over TCP, what came back truncated.
  When the Forwarder's first candidate changes, the pool moves to it.
- **Hand-overs** (`filterdns_fastpath_fallbacks_total{reason}`): `timeout` and `upstream`
  (TC, SERVFAIL/REFUSED/..., a closed port) go on in `Forwarder.resume` from where C
  stopped: TCP to the same upstream after TC, else a failure of that upstream and the
  next candidate (with one upstream, SERVFAIL or a stale answer at once); `answer` (a
  block found by inspection, records C does not parse) is finished by `Resolver.answer`
  with the answer C received. Nothing is asked twice.

- **Encrypted upstreams.** C speaks only plain DNS, so for a DoT or DoH upstream its
  sockets are one end of an in-process datagram socket pair (`socket.socketpair`), not a
  network socket: Python reads each query C built from the other end and asks it over the
  upstream's TLS or HTTPS connection (`EncryptedUpstream.ask`), then writes the answer
  back, which C takes as it would a UDP answer. No query leaves the process in plain text.
  A failed ask is recorded as that upstream's failure (certificate, tls, network, ...) and
  handed back to C as a marked SERVFAIL, so the query goes on in `Forwarder.resume`
  without the upstream, as after a closed port.

- **Upstream sets.** Every `[[forward]]` rule's server set has a pool of its own (its
  sockets, IDs, rotation and `Forwarder`), as the default set has; C picks the set of a
  name from its rule table (`FastPath.set_routes`, filled by `UdpFastPath`) and sends the
  name on that set's sockets. A query handed back carries its set, so it goes on in its
  own set's `Forwarder`.

C forwards only with the `failover` strategy; `parallel` stays in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from dns_resolver import wire
from dns_resolver.observability.dnstap import PROTOCOLS, peer_address
from dns_resolver.resolver import Pending
from dns_resolver.upstreams.upstream import EncryptedUpstream, UpstreamError

log = logging.getLogger(__name__)

POOL_SIZE = 4  # active upstream sockets; batches go round-robin over them
ROTATE_SECONDS = 1.0  # one socket replaced this often: a source port lives POOL_SIZE s
TICK_SECONDS = 0.05  # how often overdue queries are looked for
# Sockets still read after retirement (until their answers are in or timed out): C has
# MAX_SOCKETS slots for all sets, so a set's rotation pauses while this many drain (a
# silent upstream, a long timeout), or fewer when the sets must share them.
MAX_SOCKETS = 128  # _fastpath.pxd MAX_USOCK
MAX_DRAINING = 32 - 2 * POOL_SIZE
UPSTREAM_RCVBUF = 4 << 20  # answers of a full batch of batches, as the listeners have
# An encrypted upstream's ask gives up a little before C's own timeout, so that C hears of
# the failure (and its kind) rather than timing out itself.
RELAY_TIMEOUT_SHARE = 0.9
MAX_RELAY_FAILURES = 10_000  # failures C has not taken back yet (a bound, never reached)
MAX_SETS = 16  # upstream sets C forwards to (_fastpath.pxd MAX_USETS); beyond, Python


class UpstreamPool:
    """The upstream sockets of one upstream set of a `UdpFastPath`, and its hand-overs.

    Args:
        fast: the `dns_resolver.fast.fastpath.UdpFastPath` whose `FastPath` forwards.
        forwarder: the set's `Forwarder` (default: the resolver's default set).
        index: the set's number in C (0: the default set).
        sets: how many sets share C's sockets.
    """

    def __init__(self, fast: Any, forwarder: Any = None, index: int = 0, sets: int = 1) -> None:
        self.fast = fast
        self.max_draining = min(MAX_DRAINING, MAX_SOCKETS // sets - POOL_SIZE)
        self.fp = fast.fp
        self.resolver = fast.server.resolver
        self.forwarder = forwarder if forwarder is not None else self.resolver.forwarder
        self.index = index
        self.upstream: Any = None  # the Upstream the sockets are connected to
        self._active: list[tuple[int, socket.socket]] = []  # (slot, socket), oldest first
        self._relays: dict[int, socket.socket] = {}  # slot -> Python's end of a socket pair
        self._relay_tasks: set[asyncio.Task[None]] = set()
        # The marked SERVFAILs sent to C for failed encrypted asks -> the failure.
        self._relay_failures: dict[bytes, UpstreamError] = {}
        self._draining: list[tuple[int, socket.socket, float]] = []  # + when to close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_rotation = 0.0
        self._answered = 0
        self._tapped: tuple[str, int, str] | None = None  # the upstream C's dnstap frames name

    @classmethod
    def for_sets(cls, fast: Any) -> list[UpstreamPool]:
        """A pool for each upstream set of `fast`'s resolver C may forward to (none when
        C may not forward at all): the default set first, then the rules' sets."""
        resolver = fast.server.resolver
        if not cls.usable(resolver):
            return []
        local = getattr(resolver, "local", None)
        sets = list(local.forwarders()) if local is not None else [resolver.forwarder]
        sets = sets[:MAX_SETS]
        return [cls(fast, forwarder, i, len(sets)) for i, forwarder in enumerate(sets)]

    @staticmethod
    def usable(resolver: Any) -> bool:
        """True when C may forward for `resolver`: failover (encrypted upstreams through
        the in-process relay)."""
        forwarder = getattr(resolver, "forwarder", None)
        if forwarder is None or not getattr(forwarder, "upstreams", None):
            return False
        return forwarder.strategy == "failover" or len(forwarder.upstreams) == 1

    def start(self) -> None:
        """Configure C and open the sockets; call from the running loop."""
        cache = self.resolver.cache
        self.fp.set_upstream(
            self.forwarder.udp_size,
            self.forwarder.timeout,
            self.resolver.inspect_answers,
            cache is not None and (cache.serve_stale or cache.prefetch),
            cache.min_ttl if cache is not None else 0,
            cache.max_ttl if cache is not None else 0,
            cache.negative_max_ttl if cache is not None else 0,
        )
        self._loop = asyncio.get_running_loop()
        self._follow()
        self._timer = self._loop.call_later(TICK_SECONDS, self._tick)

    def close(self, *, again: bool = False) -> None:
        """Stop forwarding from C; what is in flight goes to Python, the sockets close.

        `again`: the queries in flight are asked again from the start of the Python chain
        (a config reload: the new upstreams answer them) instead of carrying on from C's
        attempt as failures of the upstream they were sent to.
        """
        self.fp.stop_forwarding()
        for task in self._relay_tasks:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        take = self._again if again else self._take
        for slot, sock in self._active:
            self._release(slot, sock, take)
        for slot, sock, _ in self._draining:
            self._release(slot, sock, take)
        self._active.clear()
        self._draining.clear()

    # -- sockets ---------------------------------------------------------------------------

    def _open(self) -> None:
        upstream = self.upstream
        relay = None
        try:
            if isinstance(upstream, EncryptedUpstream):
                sock, relay = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                relay.setblocking(False)
            else:
                sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # capped by net.core.rmem_max: best effort
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_RCVBUF)
                if relay is not None:
                    relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_RCVBUF)
            if relay is None:
                sock.connect((upstream.host, upstream.port))
        except OSError as exc:
            sock.close()
            if relay is not None:
                relay.close()
            log.warning("cannot open a socket to upstream %s: %s", upstream.name, exc)
            return
        try:
            slot = self.fp.add_socket(sock.fileno(), self.index)
        except RuntimeError as exc:  # every slot taken: the misses go to Python meanwhile
            sock.close()
            if relay is not None:
                relay.close()
            log.warning("no fast path socket to upstream %s: %s", upstream.name, exc)
            return
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._readable, slot)
        if relay is not None:
            self._relays[slot] = relay
            self._loop.add_reader(relay.fileno(), self._relay_readable, relay, upstream)
        self._active.append((slot, sock))

    def _retire(self, slot: int, sock: socket.socket, now: float) -> None:
        self.fp.retire_socket(slot)
        self._draining.append((slot, sock, now + self.forwarder.timeout + TICK_SECONDS))

    def _release(
        self, slot: int, sock: socket.socket, take: Callable[[Any], None] | None = None
    ) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        (take or self._take)(self.fp.release_socket(slot))
        sock.close()
        relay = self._relays.pop(slot, None)
        if relay is not None:
            self._loop.remove_reader(relay.fileno())
            relay.close()  # asks still running find it closed and drop their answers

    # -- the relay to an encrypted upstream --------------------------------------------------

    def _relay_readable(self, relay: socket.socket, upstream: EncryptedUpstream) -> None:
        assert self._loop is not None
        timeout = self.forwarder.timeout * RELAY_TIMEOUT_SHARE
        for _ in range(256):  # a few batches of C's; the rest at the next wake-up
            try:
                message = relay.recv(65535)
            except OSError:  # empty (BlockingIOError), or closed meanwhile
                return
            try:
                question = message[12 : wire.question_end(message)]
            except (wire.WireError, IndexError):
                continue  # C built it: never happens
            relayed = _Relayed(self, relay, upstream, message, question)
            qid = message[0] << 8 | message[1]
            if not upstream.submit(
                message, qid, question, timeout, relayed.answered, relayed.failed
            ):
                relayed.ask()

    def _relay_failed(self, relay: socket.socket, message: bytes, exc: UpstreamError) -> None:
        answer = _marked_servfail(message)
        if len(self._relay_failures) >= MAX_RELAY_FAILURES:
            self._relay_failures.clear()
        self._relay_failures[answer] = exc
        with contextlib.suppress(OSError):
            relay.send(answer)

    def _follow(self) -> None:
        """Connect to the Forwarder's first candidate (again, when it changed)."""
        candidates = self.forwarder.candidates()
        first = candidates[0] if candidates else None
        if first is self.upstream and self._active:
            return
        now = self._now()
        if self.upstream is not None:
            self.fast.flush()  # the counts so far belong to the old upstream
            log.info("fast path forwarding moves from %s to %s", self.upstream.name,
                     first.name if first is not None else "none")
        for slot, sock in self._active:
            self._retire(slot, sock, now)
        self._active.clear()
        self.upstream = first
        if first is None:
            return
        self._tap_peer(first)
        for _ in range(POOL_SIZE):
            self._open()
        self._next_rotation = now + ROTATE_SECONDS

    def _tap_peer(self, upstream: Any) -> None:
        """dnstap's forwarder messages of C's queries name `upstream` (the relay's queries
        too: they are its DoT or DoH exchanges). A DoH upstream's address is known once
        its bootstrap answered, so the relay calls this again."""
        named = (upstream.host, upstream.port, upstream.transport)
        if self.forwarder.tap is None or named == self._tapped:
            return
        self._tapped = named
        family, address = peer_address(upstream.host)
        protocol = PROTOCOLS[upstream.transport]  # udp, tls or https
        self.fp.set_dnstap_peer(self.index, family, address, upstream.port, protocol)

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(TICK_SECONDS, self._tick)
        try:
            self._take(self.fp.expire_due())
            self._health()
            self._follow()
            now = self._now()
            if (
                self._active
                and now >= self._next_rotation
                and len(self._draining) < self.max_draining
            ):
                self._next_rotation = now + ROTATE_SECONDS
                slot, sock = self._active.pop(0)
                self._retire(slot, sock, now)
                self._open()
            while self._draining and (
                self._draining[0][2] <= now or self.fp.socket_state(self._draining[0][0])[2] == 0
            ):
                slot, sock, _ = self._draining.pop(0)
                self._release(slot, sock)
        except Exception:  # the timer must keep running whatever one tick met
            log.exception("fast path forwarding tick failed")

    def _health(self) -> None:
        """Answers received from C clear the upstream's failures, as in `Forwarder`."""
        answered = self.fp.answered(self.index)
        if answered != self._answered:
            self._answered = answered
            if self.upstream is not None and self.upstream.failures:
                self.forwarder.record_success(self.upstream)

    # -- answers and hand-overs ------------------------------------------------------------

    def _readable(self, slot: int) -> None:
        self.fast.sync()
        self._take(self.fp.serve_upstream(slot))

    def _take(self, rest: Any) -> None:
        """Run what C handed back: finish an answer, or go on from C's attempt (in the
        pool of the set each query was sent to: the expiry returns every set's)."""
        if not rest:
            return
        reasons = self.fast.reasons
        fallbacks = self.fast.fallbacks
        pools = self.fast.pools
        for data, host, port, reason, fd, answer, waited, uset in rest:
            name = reasons[reason]
            fallbacks[name] += 1
            send = self.fast.sender(fd)
            pool = pools[uset] if uset < len(pools) and pools[uset].index == uset else self
            if name == "answer":
                pool._finish(data, host, port, answer, waited, send)
            else:
                # timeout; upstream: TC or an error rcode (with the answer), a closed port.
                kind = "timeout" if name == "timeout" else "network"
                pool._carry_on(data, host, port, answer, kind, waited, send)

    def _again(self, rest: Any) -> None:
        """Run queries C had sent upstream through the Python chain from the start."""
        for data, host, port, _reason, fd, _answer, _waited, _uset in rest:
            self.fast.server.handle_datagram(data, (host, port), self.fast.sender(fd))

    def _finish(
        self, data: bytes, host: str, port: int, answer: bytes, waited: float, send: Any
    ) -> None:
        resolver = self.resolver
        pending = None
        try:
            out = resolver.handle(data, host, False, waited)
            if isinstance(out, Pending):
                pending = out
                if self.upstream is not None:  # C asked it; its wait is the exchange
                    pending.upstream = (self.upstream.name, waited)
                out = resolver.answer(out, answer)
        except Exception:
            log.exception("error finishing an upstream answer for %s", host)
            out = resolver.servfail_for(data)
        if out is not None:
            send(out, (host, port))
        self.fast.server.tap(data, out, (host, port), "udp", pending)

    def _carry_on(
        self, data: bytes, host: str, port: int, answer: bytes | None, kind: str,
        waited: float, send: Any,
    ) -> None:
        resolver = self.resolver
        try:
            out = resolver.handle(data, host, False, waited)
        except Exception:
            log.exception("error handling a UDP query from %s", host)
            out = resolver.servfail_for(data)
        if isinstance(out, Pending):
            tried = self.upstream
            # Python routes the query to this set too (its rule, or none for the default
            # set), unless the rules changed meanwhile: then Python's route goes on alone.
            ours = None if self.forwarder is self.resolver.forwarder else self.forwarder
            if tried is None or out.target or out.forwarder is not ours or out.local is not None:
                self.fast.server.handle_pending(out, data, (host, port), send)
                return
            # Answers C matched before this failure count first: left to the next tick,
            # they would clear the failure about to be recorded (a dead upstream would
            # then need, and count, one failure more).
            self._health()
            failure = self._relay_failures.pop(answer, None) if answer is not None else None
            if failure is not None:
                # The relay's ask failed: that failure, not the marked SERVFAIL, counts.
                kind, answer = failure.kind, None
                self.forwarder.record_failure(tried, kind, str(failure))
                self._follow()
            elif answer is None:
                # Recorded now, not in the task: the next batch must already see it (a
                # dead upstream is left after max_failures, and C follows at once).
                self.forwarder.record_failure(tried, kind, f"{kind} (fast path)")
                self._follow()

            async def resume(pending: Pending) -> bytes:
                asking = self.forwarder.resume(pending.query, tried, answer)
                return await self.resolver.forward(pending, asking)

            self.fast.server.handle_pending(out, data, (host, port), send, resume)
        elif out is not None:
            send(out, (host, port))
            self.fast.server.tap(data, out, (host, port), "udp")


def _marked_servfail(message: bytes) -> bytes:
    """A SERVFAIL for `message` that C hands back to Python (an error rcode): the relay
    keeps the failure under these bytes, which no upstream sends (the reserved Z bit)."""
    flags = wire.QR | (message[2] << 8 & wire.RD) | 0x0040 | wire.SERVFAIL
    return message[:2] + flags.to_bytes(2, "big") + message[4:]


class _Relayed:
    """One query C sent to an encrypted upstream through the relay, on its way."""

    __slots__ = ("pool", "relay", "upstream", "message", "question")

    def __init__(
        self, pool: UpstreamPool, relay: socket.socket, upstream: EncryptedUpstream,
        message: bytes, question: bytes,
    ) -> None:
        self.pool = pool
        self.relay = relay
        self.upstream = upstream
        self.message = message
        self.question = question

    def answered(self, answer: bytes) -> None:
        self.pool._tap_peer(self.upstream)
        # A pipelined DoT query may have gone with another ID: C matches on its own.
        with contextlib.suppress(OSError):  # released meanwhile, or C's buffer full
            self.relay.send(self.message[:2] + answer[2:])

    def failed(self, exc: UpstreamError | None) -> None:
        if exc is None:  # the connection broke: once more, on a new one
            self.ask()
        else:
            self.pool._relay_failed(self.relay, self.message, exc)

    def ask(self) -> None:
        """The query through `EncryptedUpstream.ask`, in a task (opens connections)."""
        pool = self.pool
        assert pool._loop is not None
        task = pool._loop.create_task(self._ask())
        pool._relay_tasks.add(task)
        task.add_done_callback(pool._relay_tasks.discard)

    async def _ask(self) -> None:
        timeout = self.pool.forwarder.timeout * RELAY_TIMEOUT_SHARE
        qid = self.message[0] << 8 | self.message[1]
        try:
            answer = await self.upstream.ask(self.message, qid, self.question, timeout)
        except UpstreamError as exc:
            self.pool._relay_failed(self.relay, self.message, exc)
            return
        self.answered(answer)

"""The per-query pipeline: acl -> parse -> cache -> filter -> upstream -> inspect -> store.

It is split in two on purpose (DESIGN.md, "the hot path is fused in Cython"):

`Resolver.handle` is synchronous and answers everything that needs no I/O: refusals,
malformed queries, cache hits and blocked names. It only touches bytes, a dict lookup and
the matcher, so the performance issue can fuse it into Cython as is. What it cannot answer
comes back as a `Pending`, and `Resolver.resolve` (a coroutine) forwards it upstream,
inspects the answer, caches it and answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dns_resolver import edns, wire
from dns_resolver.acl import Acl
from dns_resolver.blocking import Blocker
from dns_resolver.cache import Cache, CacheKey, cache_key, render
from dns_resolver.inspect import Checker, inspect_answer
from dns_resolver.upstream import Forwarder
from filtercore.errors import InvalidNameError
from filtercore.verdict import NO_MATCH, Action, Verdict

log = logging.getLogger(__name__)

# Result labels of the queries metric (bounded set).
ALLOWED = "allowed"
BLOCKED = "blocked"
CACHED = "cached"
REFUSED = "refused"
SERVFAIL = "servfail"
FORMERR = "formerr"
NOTIMP = "notimp"

# BADVERS is a malformed query for the metrics (their result labels are a fixed set).
_BAD_QUERY_RESULT = {wire.FORMERR: FORMERR, wire.NOTIMP: NOTIMP, wire.BADVERS: FORMERR}


class Pending:
    """A query the synchronous path could not answer: it needs the upstream."""

    __slots__ = ("query", "client", "tcp", "started", "explicit_allow")

    def __init__(
        self, query: wire.Query, client: str, tcp: bool, started: float, explicit_allow: bool
    ) -> None:
        self.query = query
        self.client = client
        self.tcp = tcp
        self.started = started
        self.explicit_allow = explicit_allow


class Resolver:
    """Answers queries. Build it with `app.build_resolver` or directly in tests.

    Args:
        matcher: anything with `check(name)` and `check_ip(address)` returning verdicts.
        forwarder: the upstream forwarder.
        acl: who may query (default: loopback and private ranges).
        cache: the response cache, or None to disable caching.
        blocker: how blocks are answered.
        udp_size: our EDNS UDP payload size.
        inspect_answers: check CNAME targets and addresses of upstream answers.
        metrics: the `dns_resolver.metrics.Metrics` to record into, or None.
        querylog: the `dns_resolver.querylog.QueryLog` to write to, or None.
    """

    def __init__(
        self,
        matcher: Checker,
        forwarder: Forwarder,
        *,
        acl: Acl | None = None,
        cache: Cache | None = None,
        blocker: Blocker | None = None,
        udp_size: int = edns.DEFAULT_UDP_PAYLOAD,
        inspect_answers: bool = True,
        metrics: Any = None,
        querylog: Any = None,
    ) -> None:
        self.matcher = matcher
        self.forwarder = forwarder
        self.acl = acl or Acl()
        self.cache = cache
        self.blocker = blocker or Blocker()
        self.udp_size = udp_size
        self.inspect_answers = inspect_answers
        self.metrics = metrics
        self.querylog = querylog
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the synchronous path -------------------------------------------------------------

    def handle(self, data: bytes, client: str, tcp: bool = False) -> bytes | Pending | None:
        """Answer what needs no I/O; None means drop, a `Pending` goes to `resolve`."""
        started = time.perf_counter()
        if not self.acl.allowed(client):
            return self._refuse(data, client, tcp, started)
        try:
            query = wire.parse_query(data)
        except wire.BadQuery as bad:
            self._record(None, tcp, _BAD_QUERY_RESULT.get(bad.rcode, FORMERR), started, client)
            log.debug("bad query from %s: %s", client, bad)
            return edns.error_response(
                bad.qid, bad.flags, bad.rcode, bad.question, bad.edns, udp_size=self.udp_size
            )
        except wire.WireError as exc:
            log.debug("dropped garbage from %s: %s", client, exc)
            return None
        limit = None if tcp else edns.udp_limit(query.edns, self.udp_size)
        cache = self.cache
        if cache is not None:
            hit = cache.get(cache_key(query))
            if hit is not None:
                entry, age = hit
                if self.metrics is not None:
                    self.metrics.cache_hit()
                if cache.wants_prefetch(entry, age):
                    self._spawn(self._prefetch(query))
                out = edns.finish(
                    render(entry, query, age), query.edns, limit=limit,
                    udp_size=self.udp_size, options=entry.ede,
                )
                self._record(query, tcp, CACHED, started, client)
                return out
            if self.metrics is not None:
                self.metrics.cache_miss()
        verdict = self._check(query.qname)
        if verdict.action is Action.BLOCK:
            return self._block(query, verdict, None, client, tcp, started, limit)
        return Pending(query, client, tcp, started, verdict.action is Action.ALLOW)

    def _refuse(self, data: bytes, client: str, tcp: bool, started: float) -> bytes | None:
        query: wire.Query | None = None
        try:
            query = wire.parse_query(data)
        except wire.BadQuery as bad:
            qid, flags, question, opt = bad.qid, bad.flags, bad.question, bad.edns
        except wire.WireError:
            return None
        else:
            qid, flags, question, opt = query.id, query.flags, query.question, query.edns
        self._record(query, tcp, REFUSED, started, client)
        return edns.error_response(qid, flags, wire.REFUSED, question, opt, udp_size=self.udp_size)

    def _check(self, name: str) -> Verdict:
        try:
            return self.matcher.check(name)
        except InvalidNameError:
            # Nothing a list can name (the root, odd characters): not listed.
            return NO_MATCH

    def _block(
        self,
        query: wire.Query,
        verdict: Verdict,
        via: str | None,
        client: str,
        tcp: bool,
        started: float,
        limit: int | None,
    ) -> bytes:
        body = self.blocker.body(query)
        option = self.blocker.ede(verdict, via=via)
        if via is not None and self.cache is not None:
            # A block found by inspecting an upstream answer costs an upstream query, so it
            # is cached like the answer it replaces (the cache is cleared on list reloads).
            self.cache.store(cache_key(query), body, ede=option)
        if self.metrics is not None:
            self.metrics.block(verdict.category, verdict.list)
        self._record(query, tcp, BLOCKED, started, client, verdict)
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size, options=option)

    # -- the asynchronous path ------------------------------------------------------------

    async def resolve(self, pending: Pending) -> bytes:
        """Forward a pending query, inspect and cache the answer, and answer the client."""
        query = pending.query
        limit = None if pending.tcp else edns.udp_limit(query.edns, self.udp_size)
        response = await self.forwarder.resolve(query)
        if response is None:
            return self._upstream_failed(pending, limit)
        try:
            body, records = wire.strip_opt(response)
        except wire.WireError as exc:
            log.warning("unusable upstream answer for %s: %s", query.qname, exc)
            return self._upstream_failed(pending, limit)
        body = bytes(wire.adopt(body, query))
        if self.inspect_answers and not pending.explicit_allow:
            found = inspect_answer(self.matcher, body, records)
            if found is not None:
                verdict, via = found
                return self._block(
                    query, verdict, via, pending.client, pending.tcp, pending.started, limit
                )
        if self.cache is not None:
            entry = self.cache.store(cache_key(query), body, records)
            if entry is not None:
                # Answer as later cache hits will (TTLs clamped, negative TTL from the SOA).
                body = render(entry, query, 0)
        self._record(query, pending.tcp, ALLOWED, pending.started, pending.client)
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _upstream_failed(self, pending: Pending, limit: int | None) -> bytes:
        query = pending.query
        stale = self.cache.get_stale(cache_key(query)) if self.cache is not None else None
        if stale is not None:
            body = render(stale, query, 0, stale_ttl=self.cache.stale_answer_ttl)
            options = stale.ede + edns.ede_option(edns.EDE_STALE_ANSWER)
            self._record(query, pending.tcp, CACHED, pending.started, pending.client)
            log.info("served %s stale: no upstream answered", query.qname)
            return edns.finish(
                body, query.edns, limit=limit, udp_size=self.udp_size, options=options
            )
        self._record(query, pending.tcp, SERVFAIL, pending.started, pending.client)
        return edns.error_response(
            query.id, query.flags, wire.SERVFAIL, query.question, query.edns,
            udp_size=self.udp_size,
            options=edns.ede_option(edns.EDE_NO_REACHABLE_AUTHORITY, "no upstream answered"),
        )

    async def _prefetch(self, query: wire.Query) -> None:
        """Refresh a popular cache entry before it expires (the client already got its answer)."""
        try:
            response = await self.forwarder.resolve(query)
            if response is None or self.cache is None:
                return  # the entry expires as usual; serve-stale still has it
            body, records = wire.strip_opt(response)
            if self.inspect_answers and inspect_answer(self.matcher, body, records) is not None:
                # Leave the blocking decision (and its cache entry) to the next real query.
                self.cache.discard(cache_key(query))
                return
            self.cache.store(cache_key(query), body, records)
        except Exception:
            log.exception("prefetch of %s failed", query.qname)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- bookkeeping ----------------------------------------------------------------------

    def replace_matcher(self, matcher: Checker) -> None:
        """Swap in a new matcher (list reload); cached answers were inspected with the old
        lists and a newly listed name must not be served from the cache, so it is cleared."""
        self.matcher = matcher
        if self.cache is not None:
            self.cache.clear()

    def servfail_for(self, data: bytes) -> bytes | None:
        """A SERVFAIL for a query whose handling raised (None when even the header is bad)."""
        if len(data) < 12 or data[2] & 0x80:
            return None
        try:
            query = wire.parse_query(data)
        except wire.WireError:
            return edns.error_response((data[0] << 8) | data[1], (data[2] << 8) | data[3], 2)
        return edns.error_response(
            query.id, query.flags, wire.SERVFAIL, query.question, query.edns,
            udp_size=self.udp_size,
        )

    def _record(
        self,
        query: wire.Query | None,
        tcp: bool,
        result: str,
        started: float,
        client: str,
        verdict: Verdict | None = None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.query(
                query.qtype if query is not None else 0,
                "tcp" if tcp else "udp",
                result,
                time.perf_counter() - started,
            )
        if self.querylog is not None and query is not None:
            self.querylog.log(
                client=client,
                qname=query.qname,
                qtype=query.qtype,
                protocol="tcp" if tcp else "udp",
                result=result,
                verdict=verdict,
                duration=time.perf_counter() - started,
            )


__all__ = ["CacheKey", "Pending", "Resolver"]

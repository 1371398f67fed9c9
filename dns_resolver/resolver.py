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
from collections.abc import Awaitable, Callable
from typing import Any

from dns_resolver import edns, wire
from dns_resolver.blockpage.recent import RecentBlocks
from dns_resolver.fast._ratelimit import RateLimiter
from dns_resolver.steps.acl import Acl
from dns_resolver.steps.blocking import Blocker
from dns_resolver.steps.cache import Cache, CacheKey, cache_key, render
from dns_resolver.steps.inspect import Checker, inspect_answer
from dns_resolver.steps.local import Answer, LocalData, compose
from dns_resolver.steps.policy import Policy, PolicyTable, list_categories, policy_cache_key
from dns_resolver.steps.ratelimit import LIMITED_LOG, PASS
from dns_resolver.steps.ratelimit import RESULT as RATELIMITED
from dns_resolver.steps.safesearch import safesearch_answer, safesearch_query
from dns_resolver.upstreams.upstream import Forwarder, note_answers
from filtercore.errors import InvalidNameError
from filtercore.verdict import NO_MATCH, Action, Verdict

log = logging.getLogger(__name__)

# Result labels of the queries metric (bounded set).
# Lists that are steps of their own in the query log's `decided_by`.
_LIST_STEPS = {"overrides": "override", "subscriber": "subscriber-list",
               "bypass-prevention": "bypass", "unsafe-search": "safe-search"}  # fmt: skip
ALLOWED = "allowed"
BLOCKED = "blocked"
CACHED = "cached"
REFUSED = "refused"
SERVFAIL = "servfail"
FORMERR = "formerr"
NOTIMP = "notimp"
LOCAL = "local"

# Transports, as the metrics' `protocol` label, the query log and dnstap name them.
UDP, TCP, TLS, HTTPS, QUIC = "udp", "tcp", "tls", "https", "quic"
TRANSPORTS = (UDP, TCP, TLS, HTTPS, QUIC)

# BADVERS is a malformed query for the metrics (their result labels are a fixed set).
_BAD_QUERY_RESULT = {wire.FORMERR: FORMERR, wire.NOTIMP: NOTIMP, wire.BADVERS: FORMERR}


class Pending:
    """A query the synchronous path could not answer: it needs the upstream.

    Under policies it also carries the cache key (which includes the policy and its mask),
    the policy (its categories inspect the answer, its blocker answers a block) and, for a
    safe-search rewrite, the CNAME target to resolve instead. `forwarder` is the upstream
    set a forwarding rule chose, `local` a local answer still waiting for its target.
    `generation` is the resolver's when the query was decided (see `Resolver.generation`).
    """

    __slots__ = (
        "query", "client", "transport", "started", "explicit_allow", "key", "policy", "target",
        "forwarder", "local", "generation", "upstream",
    )  # fmt: skip

    def __init__(
        self,
        query: wire.Query,
        client: str,
        transport: str,
        started: float,
        explicit_allow: bool,
        *,
        key: CacheKey | None = None,
        policy: Policy | None = None,
        target: str = "",
        forwarder: Forwarder | None = None,
        local: Answer | None = None,
        generation: int = 0,
    ) -> None:
        self.query = query
        self.upstream: tuple[str, float] | None = None  # who answered, in seconds
        self.client = client
        self.transport = transport
        self.started = started
        self.explicit_allow = explicit_allow
        self.key = key if key is not None else cache_key(query)
        self.policy = policy
        self.target = target
        self.forwarder = forwarder  # a [[forward]] rule's servers (None: the default set)
        self.local = local  # a local CNAME or rewrite whose target is resolved upstream
        self.generation = generation

    @property
    def tcp(self) -> bool:
        """Over a stream (answers are not cut to a UDP payload size)."""
        return self.transport != UDP


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
        metrics: the `dns_resolver.observability.metrics.Metrics` to record into, or None.
        querylog: the `dns_resolver.observability.querylog.QueryLog` to write to, or None.
        policies: per-client policies (`dns_resolver.steps.policy`), or None for one rule set.
        recent_blocks: where blocks are remembered for the block page, or None.
        local: local records, rewrites and forwarding rules (`dns_resolver.steps.local`), or None
            for none (everything goes to `forwarder`).
        ratelimit: the per-client `RateLimiter` (dns_resolver.steps.ratelimit), or None. The UDP
            fast path charges UDP queries itself and sets `udp_charged`.
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
        policies: PolicyTable | None = None,
        recent_blocks: RecentBlocks | None = None,
        local: LocalData | None = None,
        ratelimit: RateLimiter | None = None,
    ) -> None:
        self.matcher = matcher
        # The lists' matcher without the local overrides (reports/); see set_overrides.
        self.base_matcher = matcher
        self.overrides: Any = None
        self.policies = policies
        self.recent_blocks = recent_blocks
        self.forwarder = forwarder
        self.acl = acl or Acl()
        self.cache = cache
        self.blocker = blocker or Blocker()
        self.udp_size = udp_size
        self.inspect_answers = inspect_answers
        self.metrics = metrics
        self.querylog = querylog
        self.local = local
        self.ratelimit = ratelimit
        self.udp_charged = False
        # dns_resolver.observability.dnstap.Dnstap when [dnstap] is on (App sets it; servers tap).
        self.dnstap: Any = None
        # The last block answer and its EDE option, for dnstap's Policy (see tap_option).
        self._last_block: tuple[bytes, bytes] | None = None
        # Bumped by every swap of the lists or the settings: an upstream answer to a query
        # decided before the swap still goes to its client, but is not cached (the cache
        # was cleared by the swap, and the answer was judged by the rules it replaced).
        self.generation = 0
        # Called after each swap (the C fast path re-asks what it forwarded before it).
        self.on_swap: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the synchronous path -------------------------------------------------------------

    def handle(
        self,
        data: bytes,
        client: str,
        tcp: bool = False,
        waited: float = 0.0,
        *,
        transport: str | None = None,
        client_id: str | None = None,
        charged: bool = False,
    ) -> bytes | Pending | None:
        """Answer what needs no I/O; None means drop, a `Pending` goes to `resolve`.
        `waited`: seconds the query spent before it came here (in the C fast path, when
        it hands a query over), counted in its response time.

        `transport` is one of `TRANSPORTS` (default "tcp" if `tcp` else "udp"; every one but
        "udp" is a stream: answers are not cut to a payload size) and reaches the metrics,
        the query log and, through `Pending.transport`, dnstap. `client_id` is the ClientID
        an encrypted transport read (TLS server name, DoH path): it chooses a policy that
        lists it (`PolicyTable.select`), and never reaches the cache key itself. `charged`:
        the C stream loop charged it to the rate limiter already."""
        started = time.perf_counter() - waited
        if transport is None:
            transport = TCP if tcp else UDP
        stream = transport != UDP
        if self.ratelimit is not None and not charged and (stream or not self.udp_charged):
            limited, action = self.ratelimit.limit(client, stream)
            if limited != PASS:
                return self._limited(
                    data, client, transport, started, action, limited == LIMITED_LOG
                )
        if not self.acl.allowed(client):
            return self._refuse(data, client, transport, started)
        try:
            query = wire.parse_query(data)
        except wire.BadQuery as bad:
            self._record(
                None, transport, _BAD_QUERY_RESULT.get(bad.rcode, FORMERR), started, client,
                decided_by="parser",
            )
            log.debug("bad query from %s: %s", client, bad)
            return edns.error_response(
                bad.qid, bad.flags, bad.rcode, bad.question, bad.edns, udp_size=self.udp_size
            )
        except wire.WireError as exc:
            log.debug("dropped garbage from %s: %s", client, exc)
            return None
        limit = None if stream else edns.udp_limit(query.edns, self.udp_size)
        if query.qtype == wire.TYPE_ANY:
            return self._any(query, client, transport, started, limit)
        if self.policies is not None:
            return self._handle_policy(query, client, transport, started, limit, client_id)
        key = cache_key(query)
        hit = self._from_cache(query, key, None, client, transport, started, limit)
        if hit is not None:
            return hit
        verdict = self._check(query.qname)
        if verdict.action is Action.BLOCK:
            return self._block(query, verdict, None, client, transport, started, limit)
        pending = Pending(
            query, client, transport, started, verdict.action is Action.ALLOW, key=key,
            generation=self.generation,
        )
        return pending if self.local is None else self._local(pending, limit)

    def _from_cache(
        self,
        query: wire.Query,
        key: CacheKey,
        policy: Policy | None,
        client: str,
        transport: str,
        started: float,
        limit: int | None,
        *,
        prefetch: bool = True,
    ) -> bytes | None:
        """The answer from the cache, or None on a miss.

        `prefetch=False` for safe-search rewrites: refreshing would ask for the query name
        and store the unrewritten answer.
        """
        cache = self.cache
        if cache is None:
            return None
        hit = cache.get(key)
        if hit is None:
            if self.metrics is not None:
                self.metrics.cache_miss()
            return None
        entry, age = hit
        if self.metrics is not None:
            self.metrics.cache_hit()
        if prefetch and cache.wants_prefetch(entry, age):
            self._spawn(self._prefetch(query, key, policy))
        out = edns.finish(
            render(entry, query, age),
            query.edns,
            limit=limit,
            udp_size=self.udp_size,
            options=entry.ede,
        )
        self._record(query, transport, CACHED, started, client, decided_by="cache")
        return out

    def _handle_policy(
        self,
        query: wire.Query,
        client: str,
        transport: str,
        started: float,
        limit: int | None,
        client_id: str | None,
    ) -> bytes | Pending:
        """The policy chain (dns_resolver.steps.policy): select, decide, then cache/upstream.

        The policy decides before the cache is asked, because one cached answer may be
        allowed for one policy and blocked for another, and allowance minutes must be
        counted on cache hits too; the cache key includes the policy and its mask.
        """
        table = self.policies
        assert table is not None
        selection = table.select(client, query.edns, client_id)
        decision = table.decide(selection, query.qname, self.matcher)
        policy = selection.policy
        if decision.action in ("block", "canary"):
            if self.recent_blocks is not None and decision.action == "block":
                self.recent_blocks.add(query.qname, decision.verdict, policy.name, decision.note)
            return self._block(
                query,
                decision.verdict,
                None,
                client,
                transport,
                started,
                limit,
                blocker=decision.blocker,
                note=decision.note,
            )
        key = policy_cache_key(query, policy.index, policy.mask)
        if selection.lists_id:
            key = (*key, selection.lists_id)  # own lists decide too (not mirrored into C)
        hit = self._from_cache(
            query,
            key,
            policy,
            client,
            transport,
            started,
            limit,
            prefetch=decision.action != "rewrite",
        )
        if hit is not None:
            return hit
        pending = Pending(
            query,
            client,
            transport,
            started,
            decision.action != "pass",
            key=key,
            policy=policy,
            target=decision.target,
            generation=self.generation,
        )
        if self.local is None or decision.action == "rewrite":
            return pending
        return self._local(pending, limit)

    def _local(self, pending: Pending, limit: int | None) -> bytes | Pending:
        """Local records, rewrites and forwarding rules (`dns_resolver.steps.local`): a local
        answer (inspected like an upstream one), or the pending query with its route."""
        local = self.local
        assert local is not None
        query = pending.query
        policy = pending.policy.name if pending.policy is not None else ""
        name = query.qname.lower().rstrip(".")
        target = local.rewrite(name, policy)
        if target is not None:
            found = local.answer(query, policy, target) or Answer(target=target, rename=True)
        else:
            found = local.answer(query, policy)
        if found is None:
            route = local.route(name, policy)
            if not isinstance(route, str):
                if route is not self.forwarder:
                    pending.forwarder = route
                return pending
            body = local.nxdomain(query, route)
        elif found.target:
            pending.local = found
            return pending
        else:
            body = found.body
        blocked = self._inspect(pending, body, None, limit)
        if blocked is not None:
            return blocked
        self._record(query, pending.transport, LOCAL, pending.started, pending.client,
                     decided_by="local")  # fmt: skip
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _refuse(self, data: bytes, client: str, transport: str, started: float) -> bytes | None:
        query: wire.Query | None = None
        try:
            query = wire.parse_query(data)
        except wire.BadQuery as bad:
            qid, flags, question, opt = bad.qid, bad.flags, bad.question, bad.edns
        except wire.WireError:
            return None
        else:
            qid, flags, question, opt = query.id, query.flags, query.question, query.edns
        self._record(query, transport, REFUSED, started, client, decided_by="acl")
        return edns.error_response(qid, flags, wire.REFUSED, question, opt, udp_size=self.udp_size)

    def _limited(
        self,
        data: bytes,
        client: str,
        transport: str,
        started: float,
        action: str,
        log_it: bool,
    ) -> bytes | None:
        """The answer to a query over its network's rate limit: none (`drop`; over TCP the
        limiter says `refused` instead), REFUSED, or an empty answer with TC (`truncate`).
        `log_it`: a query log line is due (at most one a second per network)."""
        if action == "drop" and not (log_it and self.querylog is not None):
            return None  # a flood's common case: nothing to parse
        try:
            query = wire.parse_query(data)
        except wire.BadQuery as bad:
            qid, flags, question, opt = bad.qid, bad.flags, bad.question, bad.edns
            query = None
        except wire.WireError:
            return None
        else:
            qid, flags, question, opt = query.id, query.flags, query.question, query.edns
        if log_it and self.querylog is not None and query is not None:
            self.querylog.log(
                client=client,
                qname=query.qname,
                qtype=query.qtype,
                protocol=transport,
                result=RATELIMITED,
                duration=time.perf_counter() - started,
                decided_by="ratelimit",
            )
        if action == "drop":
            return None
        rcode = wire.REFUSED if action == "refused" else wire.NOERROR
        out = edns.error_response(qid, flags, rcode, question, opt, udp_size=self.udp_size)
        if action == "truncate":
            out = out[:2] + bytes([out[2] | 0x02]) + out[3:]  # TC: a real client asks over TCP
        return out

    def _any(
        self, query: wire.Query, client: str, transport: str, started: float, limit: int | None
    ) -> bytes:
        """RFC 8482 4.2: ANY gets one synthesised HINFO ("RFC8482" ""), so no query draws
        a large answer (the C fast path answers the same, `FastPath._any_answer`)."""
        flags = wire.response_flags(query.flags, wire.NOERROR)
        body = (
            wire.header(query.id, flags, 1, 1, 0, 0)
            + query.question
            + wire.rr(wire.QNAME_POINTER, wire.TYPE_HINFO, 3600, b"\x07RFC8482\x00", query.qclass)
        )
        self._record(query, transport, ALLOWED, started, client, decided_by="rfc8482")
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

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
        transport: str,
        started: float,
        limit: int | None,
        *,
        blocker: Blocker | None = None,
        note: str | None = None,
        key: CacheKey | None = None,
        cache: Cache | None = None,
    ) -> bytes:
        blocker = blocker or self.blocker
        body = blocker.body(query)
        option = blocker.ede(verdict, via=via, note=note)
        if via is not None and cache is not None:
            # A block found by inspecting an upstream answer costs an upstream query, so it
            # is cached like the answer it replaces (the cache is cleared on list reloads).
            cache.store(key if key is not None else cache_key(query), body, ede=option)
        if self.metrics is not None:
            self.metrics.block(verdict.category, verdict.list)
        self._record(
            query, transport, BLOCKED, started, client, verdict,
            decided_by=block_step(verdict, via, note),
        )  # fmt: skip
        out = edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size, options=option)
        if self.dnstap is not None:
            self._last_block = (out, option)
        return out

    # -- the asynchronous path ------------------------------------------------------------

    async def resolve(self, pending: Pending) -> bytes:
        """Forward a pending query, inspect and cache the answer, and answer the client."""
        if pending.target or pending.local is not None:
            limit = None if pending.tcp else edns.udp_limit(pending.query.edns, self.udp_size)
            if pending.local is not None:
                return await self._local_target(pending, pending.local, limit)
            return await self._rewrite(pending, limit)
        forwarder = pending.forwarder or self.forwarder
        return await self.forward(pending, forwarder.resolve(pending.query))

    async def forward(self, pending: Pending, asking: Awaitable[bytes | None]) -> bytes:
        """Answer `pending` with what `asking` (an upstream set's `resolve` or `resume`)
        gets, noting which upstream answered and how fast (the query log says)."""
        answered = note_answers()
        response = await asking
        pending.upstream = answered[0] if answered else None
        return self.answer(pending, response)

    def answer(self, pending: Pending, response: bytes | None) -> bytes:
        """The client's answer from the upstream's `response` (None: every upstream
        failed): inspected, cached, made to fit the query. The C fast path hands over
        answers it does not finish itself here."""
        query = pending.query
        limit = None if pending.tcp else edns.udp_limit(query.edns, self.udp_size)
        if response is None:
            return self._upstream_failed(pending, limit)
        try:
            body, records = wire.strip_opt(response)
        except wire.WireError as exc:
            log.warning("unusable upstream answer for %s: %s", query.qname, exc)
            return self._upstream_failed(pending, limit)
        cache = self._cache_for(pending)
        blocked = self._inspect(pending, body, records, limit)
        if blocked is not None:
            return blocked
        # The upstream's body is stored as is (a hit patches ID, flags and question); the
        # client gets it made to fit its query once, as later cache hits will see it (TTLs
        # clamped, negative TTL from the SOA) when it was cacheable.
        entry = cache.store(pending.key, body, records) if cache is not None else None
        body = render(entry, query, 0) if entry is not None else bytes(wire.adopt(body, query))
        self._record(query, pending.transport, ALLOWED, pending.started, pending.client,
                     decided_by=pass_step(pending), upstream=pending.upstream)  # fmt: skip
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _inspect(
        self, pending: Pending, body: bytes, records: list[wire.RR] | None, limit: int | None
    ) -> bytes | None:
        """The block answer when inspecting `body` finds a listed CNAME target or address
        (and the name was not explicitly allowed), else None."""
        if not self.inspect_answers or pending.explicit_allow:
            return None
        policy = pending.policy
        found = inspect_answer(self._checker(policy), body, records)
        if found is None:
            return None
        verdict, via = found
        query = pending.query
        if policy is not None and self.recent_blocks is not None:
            self.recent_blocks.add(query.qname, verdict, policy.name, policy.note)
        return self._block(
            query,
            verdict,
            via,
            pending.client,
            pending.transport,
            pending.started,
            limit,
            blocker=policy.blocker if policy is not None else None,
            note=policy.note if policy is not None else None,
            key=pending.key,
            cache=self._cache_for(pending),
        )

    async def _local_target(self, pending: Pending, found: Answer, limit: int | None) -> bytes:
        """A local CNAME chain or a rewrite: resolve the target where its route says, and
        answer with the chain and the target's records (or those records renamed)."""
        local = self.local
        assert local is not None
        query = pending.query
        policy = pending.policy.name if pending.policy is not None else ""
        target_query = safesearch_query(query, found.target)
        route = local.route(found.target, policy)
        if isinstance(route, str):
            response: bytes | None = local.nxdomain(target_query, route)
        else:
            answered = note_answers()
            response = await route.resolve(target_query)
            pending.upstream = answered[0] if answered else None
        if response is None:
            return self._upstream_failed(pending, limit)
        try:
            body = compose(query, found, response)
        except wire.WireError as exc:
            log.warning("unusable upstream answer for %s: %s", found.target, exc)
            return self._upstream_failed(pending, limit)
        blocked = self._inspect(pending, body, None, limit)
        if blocked is not None:
            return blocked
        cache = self._cache_for(pending)
        if cache is not None:
            entry = cache.store(pending.key, body)
            if entry is not None:
                body = render(entry, query, 0)
        self._record(query, pending.transport, LOCAL, pending.started, pending.client,
                     decided_by="local", upstream=pending.upstream)  # fmt: skip
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _cache_for(self, pending: Pending) -> Cache | None:
        """The cache to store `pending`'s answer in: None when the lists or settings were
        swapped since it was decided (`generation`)."""
        return self.cache if pending.generation == self.generation else None

    def _checker(self, policy: Policy | None) -> Checker:
        """The matcher answer inspection uses: restricted to the policy's categories."""
        if policy is None or self.policies is None:
            return self.matcher
        return self.policies.checker(policy, self.matcher)

    async def _rewrite(self, pending: Pending, limit: int | None) -> bytes:
        """Safe search: answer with a CNAME to the target and the target's records."""
        query = pending.query
        target_query = safesearch_query(query, pending.target)
        answered = note_answers()
        response = await self.forwarder.resolve(target_query)
        pending.upstream = answered[0] if answered else None
        if response is None:
            return self._upstream_failed(pending, limit)
        try:
            body = safesearch_answer(query, pending.target, response, pending.policy)
        except wire.WireError as exc:
            log.warning("unusable upstream answer for %s: %s", pending.target, exc)
            return self._upstream_failed(pending, limit)
        cache = self._cache_for(pending)
        if cache is not None:
            entry = cache.store(pending.key, body)
            if entry is not None:
                body = render(entry, query, 0)
        self._record(query, pending.transport, ALLOWED, pending.started, pending.client,
                     decided_by="safe-search", upstream=pending.upstream)  # fmt: skip
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _upstream_failed(self, pending: Pending, limit: int | None) -> bytes:
        query = pending.query
        stale = self.cache.get_stale(pending.key) if self.cache is not None else None
        if stale is not None:
            body = render(stale, query, 0, stale_ttl=self.cache.stale_answer_ttl)
            options = stale.ede + edns.ede_option(edns.EDE_STALE_ANSWER)
            self._record(query, pending.transport, CACHED, pending.started, pending.client,
                         decided_by="stale-cache")  # fmt: skip
            log.info("served %s stale: no upstream answered", query.qname)
            return edns.finish(
                body, query.edns, limit=limit, udp_size=self.udp_size, options=options
            )
        self._record(query, pending.transport, SERVFAIL, pending.started, pending.client,
                     decided_by="upstream-failed")  # fmt: skip
        return edns.error_response(
            query.id, query.flags, wire.SERVFAIL, query.question, query.edns,
            udp_size=self.udp_size,
            options=edns.ede_option(edns.EDE_NO_REACHABLE_AUTHORITY, "no upstream answered"),
        )

    async def _prefetch(self, query: wire.Query, key: CacheKey, policy: Policy | None) -> None:
        """Refresh a popular cache entry before it expires (the client already got its answer)."""
        generation = self.generation
        try:
            forwarder = self._forwarder_for(query, policy)
            if forwarder is None:
                return  # a local answer or a rewrite: refreshed by the next query
            response = await forwarder.resolve(query)
            if response is None or self.cache is None or generation != self.generation:
                # The entry expires as usual (serve-stale still has it), or a swap of the
                # lists or settings cleared it meanwhile.
                return
            body, records = wire.strip_opt(response)
            if self.inspect_answers and (
                inspect_answer(self._checker(policy), body, records) is not None
            ):
                # Leave the blocking decision (and its cache entry) to the next real query.
                self.cache.discard(key)
                return
            self.cache.store(key, body, records)
        except Exception:
            log.exception("prefetch of %s failed", query.qname)

    def _forwarder_for(self, query: wire.Query, policy: Policy | None) -> Forwarder | None:
        """The upstream set `query` is forwarded to, None when it is answered locally."""
        local = self.local
        if local is None:
            return self.forwarder
        name = query.qname.lower().rstrip(".")
        who = policy.name if policy is not None else ""
        if local.rewrite(name, who) is not None or local.answer(query, who) is not None:
            return None
        route = local.route(name, who)
        return None if isinstance(route, str) else route

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- bookkeeping ----------------------------------------------------------------------

    def replace_matcher(self, matcher: Checker) -> None:
        """Swap in a new matcher (list reload); cached answers were inspected with the old
        lists and a newly listed name must not be served from the cache, so it is cleared.
        Local overrides (`set_overrides`) stay on top of the new matcher."""
        self.base_matcher = matcher
        self.generation += 1
        if self.overrides is not None:
            from reports.overrides import LayeredMatcher

            matcher = LayeredMatcher(self.overrides, matcher)
        self.matcher = matcher
        if self.cache is not None:
            self.cache.clear()
        if self.policies is not None:
            # Category bits may have moved: the policies' masks are recomputed.
            base = self.base_matcher
            self.policies.bind(base.categories, list_categories(base))
        if self.on_swap is not None:
            self.on_swap()

    def take_settings(self, other: Resolver) -> None:
        """Serve with `other`'s configured parts from now on (a config reload): ACL,
        cache, blocker, upstreams (and forwarding rules' sets), local data, policies, query
        log. The lists, the reviewers'
        overrides and the recent blocks stay; the new cache starts empty, and the new
        policies are bound to the lists' categories."""
        self.acl = other.acl
        self.cache = other.cache
        self.blocker = other.blocker
        self.forwarder = other.forwarder
        self.local = other.local
        self.policies = other.policies
        self.udp_size = other.udp_size
        self.inspect_answers = other.inspect_answers
        self.querylog = other.querylog
        if self.recent_blocks is None or other.recent_blocks is None:
            self.recent_blocks = other.recent_blocks
        self.replace_matcher(self.base_matcher)

    def set_local(self, local: LocalData) -> None:
        """Swap in rebuilt local data (hosts files re-read); answers cached under the old
        data (rewrites, local CNAMEs) are dropped."""
        self.local = local
        if self.cache is not None:
            self.cache.clear()

    def set_overrides(self, overrides: Any) -> None:
        """Put reviewers' local overrides (`reports.overrides.OverrideMatcher`: `check(name)
        -> Verdict | None`) above the lists, or remove them (None or empty). Answers cached
        under the old overrides are dropped, so the change shows in the next query."""
        self.overrides = overrides if overrides is not None and len(overrides) else None
        self.replace_matcher(self.base_matcher)

    def tap_option(self, out: bytes) -> bytes:
        """The EDE option `out` was built with when it is a block answer, else b"" (known
        even when the client's query had no EDNS to carry it). Matched by identity: the
        answer is sent right after `_block` returns it, with no other query in between."""
        last = self._last_block
        return last[1] if last is not None and last[0] is out else b""

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
        transport: str,
        result: str,
        started: float,
        client: str,
        verdict: Verdict | None = None,
        *,
        decided_by: str | None = None,
        upstream: tuple[str, float] | None = None,
    ) -> None:
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.query(query.qtype if query is not None else 0, transport, result, elapsed)
        if self.querylog is not None and query is not None:
            self.querylog.log(
                client=client,
                qname=query.qname,
                qtype=query.qtype,
                protocol=transport,
                result=result,
                verdict=verdict,
                duration=elapsed,
                decided_by=decided_by,
                upstream=upstream,
            )


def block_step(verdict: Verdict, via: str | None, note: str | None) -> str:
    """What decided a block, for the query log's `decided_by`: the answer inspection's
    match (`cname=NAME`, `address=IP`), a reviewer's override (or a subscriber's own
    list, a bypass canary, unsafe search), the policy's schedule window, block-now or
    spent allowance (its note), or else the list rule."""
    if via:
        return via
    step = _LIST_STEPS.get(verdict.list or "")
    if step is not None:
        return step
    for part in (note or "").split():
        if not part.startswith("policy="):
            return part  # schedule=NAME, block-now, allowance=CATEGORY:...
    return "list"


def pass_step(pending: Pending) -> str:
    """What let a forwarded query through: a paused policy, an allow rule, or nothing
    listed it (the upstream's answer, inspected)."""
    policy = pending.policy
    if policy is not None and policy.paused_until > time.time():
        return "pause"
    return "list" if pending.explicit_allow else "upstream"


__all__ = ["TRANSPORTS", "CacheKey", "Pending", "Resolver"]

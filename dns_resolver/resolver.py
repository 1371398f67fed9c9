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
from dns_resolver.blockpage.recent import RecentBlocks
from dns_resolver.cache import Cache, CacheKey, cache_key, render
from dns_resolver.inspect import Checker, inspect_answer
from dns_resolver.policy import Policy, PolicyTable, list_categories, policy_cache_key
from dns_resolver.safesearch import safesearch_answer, safesearch_query
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
    """A query the synchronous path could not answer: it needs the upstream.

    Under policies it also carries the cache key (which includes the policy and its mask),
    the policy (its categories inspect the answer, its blocker answers a block) and, for a
    safe-search rewrite, the CNAME target to resolve instead.
    """

    __slots__ = ("query", "client", "tcp", "started", "explicit_allow", "key", "policy", "target")

    def __init__(
        self,
        query: wire.Query,
        client: str,
        tcp: bool,
        started: float,
        explicit_allow: bool,
        *,
        key: CacheKey | None = None,
        policy: Policy | None = None,
        target: str = "",
    ) -> None:
        self.query = query
        self.client = client
        self.tcp = tcp
        self.started = started
        self.explicit_allow = explicit_allow
        self.key = key if key is not None else cache_key(query)
        self.policy = policy
        self.target = target


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
        policies: per-client policies (`dns_resolver.policy`), or None for one rule set.
        recent_blocks: where blocks are remembered for the block page, or None.
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
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the synchronous path -------------------------------------------------------------

    def handle(
        self, data: bytes, client: str, tcp: bool = False, waited: float = 0.0
    ) -> bytes | Pending | None:
        """Answer what needs no I/O; None means drop, a `Pending` goes to `resolve`.
        `waited`: seconds the query spent before it came here (in the C fast path, when
        it hands a query over), counted in its response time."""
        started = time.perf_counter() - waited
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
        if self.policies is not None:
            return self._handle_policy(query, client, tcp, started, limit)
        key = cache_key(query)
        hit = self._from_cache(query, key, None, client, tcp, started, limit)
        if hit is not None:
            return hit
        verdict = self._check(query.qname)
        if verdict.action is Action.BLOCK:
            return self._block(query, verdict, None, client, tcp, started, limit)
        return Pending(query, client, tcp, started, verdict.action is Action.ALLOW, key=key)

    def _from_cache(
        self,
        query: wire.Query,
        key: CacheKey,
        policy: Policy | None,
        client: str,
        tcp: bool,
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
        self._record(query, tcp, CACHED, started, client)
        return out

    def _handle_policy(
        self, query: wire.Query, client: str, tcp: bool, started: float, limit: int | None
    ) -> bytes | Pending:
        """The policy chain (dns_resolver.policy): select, decide, then cache/upstream.

        The policy decides before the cache is asked, because one cached answer may be
        allowed for one policy and blocked for another, and allowance minutes must be
        counted on cache hits too; the cache key includes the policy and its mask.
        """
        table = self.policies
        assert table is not None
        selection = table.select(client, query.edns)
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
                tcp,
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
            tcp,
            started,
            limit,
            prefetch=decision.action != "rewrite",
        )
        if hit is not None:
            return hit
        return Pending(
            query,
            client,
            tcp,
            started,
            decision.action != "pass",
            key=key,
            policy=policy,
            target=decision.target,
        )

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
        *,
        blocker: Blocker | None = None,
        note: str | None = None,
        key: CacheKey | None = None,
    ) -> bytes:
        blocker = blocker or self.blocker
        body = blocker.body(query)
        option = blocker.ede(verdict, via=via, note=note)
        if via is not None and self.cache is not None:
            # A block found by inspecting an upstream answer costs an upstream query, so it
            # is cached like the answer it replaces (the cache is cleared on list reloads).
            self.cache.store(key if key is not None else cache_key(query), body, ede=option)
        if self.metrics is not None:
            self.metrics.block(verdict.category, verdict.list)
        self._record(query, tcp, BLOCKED, started, client, verdict)
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size, options=option)

    # -- the asynchronous path ------------------------------------------------------------

    async def resolve(self, pending: Pending) -> bytes:
        """Forward a pending query, inspect and cache the answer, and answer the client."""
        if pending.target:
            limit = None if pending.tcp else edns.udp_limit(pending.query.edns, self.udp_size)
            return await self._rewrite(pending, limit)
        return self.answer(pending, await self.forwarder.resolve(pending.query))

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
        policy = pending.policy
        if self.inspect_answers and not pending.explicit_allow:
            found = inspect_answer(self._checker(policy), body, records)
            if found is not None:
                verdict, via = found
                if policy is not None and self.recent_blocks is not None:
                    self.recent_blocks.add(query.qname, verdict, policy.name, policy.note)
                return self._block(
                    query,
                    verdict,
                    via,
                    pending.client,
                    pending.tcp,
                    pending.started,
                    limit,
                    blocker=policy.blocker if policy is not None else None,
                    note=policy.note if policy is not None else None,
                    key=pending.key,
                )
        # The upstream's body is stored as is (a hit patches ID, flags and question); the
        # client gets it made to fit its query once, as later cache hits will see it (TTLs
        # clamped, negative TTL from the SOA) when it was cacheable.
        entry = self.cache.store(pending.key, body, records) if self.cache is not None else None
        body = render(entry, query, 0) if entry is not None else bytes(wire.adopt(body, query))
        self._record(query, pending.tcp, ALLOWED, pending.started, pending.client)
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _checker(self, policy: Policy | None) -> Checker:
        """The matcher answer inspection uses: restricted to the policy's categories."""
        if policy is None or self.policies is None:
            return self.matcher
        return self.policies.checker(policy, self.matcher)

    async def _rewrite(self, pending: Pending, limit: int | None) -> bytes:
        """Safe search: answer with a CNAME to the target and the target's records."""
        query = pending.query
        target_query = safesearch_query(query, pending.target)
        response = await self.forwarder.resolve(target_query)
        if response is None:
            return self._upstream_failed(pending, limit)
        try:
            body = safesearch_answer(query, pending.target, response, pending.policy)
        except wire.WireError as exc:
            log.warning("unusable upstream answer for %s: %s", pending.target, exc)
            return self._upstream_failed(pending, limit)
        if self.cache is not None:
            entry = self.cache.store(pending.key, body)
            if entry is not None:
                body = render(entry, query, 0)
        self._record(query, pending.tcp, ALLOWED, pending.started, pending.client)
        return edns.finish(body, query.edns, limit=limit, udp_size=self.udp_size)

    def _upstream_failed(self, pending: Pending, limit: int | None) -> bytes:
        query = pending.query
        stale = self.cache.get_stale(pending.key) if self.cache is not None else None
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

    async def _prefetch(self, query: wire.Query, key: CacheKey, policy: Policy | None) -> None:
        """Refresh a popular cache entry before it expires (the client already got its answer)."""
        try:
            response = await self.forwarder.resolve(query)
            if response is None or self.cache is None:
                return  # the entry expires as usual; serve-stale still has it
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

    def set_overrides(self, overrides: Any) -> None:
        """Put reviewers' local overrides (`reports.overrides.OverrideMatcher`: `check(name)
        -> Verdict | None`) above the lists, or remove them (None or empty). Answers cached
        under the old overrides are dropped, so the change shows in the next query."""
        self.overrides = overrides if overrides is not None and len(overrides) else None
        self.replace_matcher(self.base_matcher)

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
        elapsed = time.perf_counter() - started
        protocol = "tcp" if tcp else "udp"
        if self.metrics is not None:
            self.metrics.query(query.qtype if query is not None else 0, protocol, result, elapsed)
        if self.querylog is not None and query is not None:
            self.querylog.log(
                client=client,
                qname=query.qname,
                qtype=query.qtype,
                protocol=protocol,
                result=result,
                verdict=verdict,
                duration=elapsed,
            )


__all__ = ["CacheKey", "Pending", "Resolver"]

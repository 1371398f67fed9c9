"""The Python side of the UDP fast path (`_fastpath.pyx`): wiring, hand-over, metrics.

`UdpFastPath` owns one `FastPath` (the C loop, its response cache and counters) for all
UDP listeners of a `DnsServer`. Each UDP socket is watched with `loop.add_reader`; when it
is readable, `FastPath.serve` drains it in batches of 64 datagrams (recvmmsg/sendmmsg, GIL
released) and answers cache hits and blocks in C. What C cannot answer comes back here and
goes through `DnsServer.handle_datagram`, the same code the plain asyncio listener runs.

Keeping the two in step, without a second copy of any rule:

- the C cache mirrors the Python `Cache` (`Cache.mirror`): every answer Python stores is
  stored in C with the same body, TTL offsets, lifetime and EDE; clear/discard follow;
- block answers come from wire templates made by the resolver's `Blocker` itself, and the
  EDE option of a rule is learnt the first time Python blocks by it (`learn_block`);
- a list reload (`Resolver.replace_matcher`) is noticed before the next batch and the new
  `MatchCore` swapped in (the cache was cleared by the reload through the mirror);
- the ACL's networks and the policies' networks/masks are copied into C.

Counters kept in C are flushed into `Metrics` once a second (no lock or Python call per
query); `filterdns_fastpath_answers` and `filterdns_fastpath_fallbacks{reason}` say how
much of the traffic stayed in C.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from dns_resolver import wire
from dns_resolver.observability.dnstap import FORWARDER_QUERY, FORWARDER_RESPONSE
from dns_resolver.steps.bypass import suffixes
from dns_resolver.steps.cache import CacheEntry
from dns_resolver.upstreams.fastforward import UpstreamPool
from fdconfig import ANONYMIZE_MODES
from fdconfig.forward import ROOT

try:
    from dns_resolver.fast._fastpath import REASONS, FastPath
except ImportError:  # not built (a source tree without build_ext): the asyncio path serves
    FastPath = None
    REASONS = ()

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds between metrics flushes
ROUNDS = 8  # batches per readable event before yielding to the event loop
LOG_BUFFER = 8 << 20  # query log lines C keeps between drains: ~0.4 s at 100,000 q/s
LOG_DRAIN_SECONDS = 0.1
TAP_BUFFER = 16 << 20  # dnstap frames C keeps between drains (two per query, ~150 B each)
_TEMPLATE_TYPES = (wire.TYPE_A, wire.TYPE_AAAA, wire.TYPE_TXT)
_EDE_FIELDS = re.compile(r"category=(\S+) list=(\S+)")


def available() -> bool:
    """True when the Cython extension is built (Linux: recvmmsg/sendmmsg)."""
    return FastPath is not None and hasattr(socket, "SO_REUSEPORT")


def wire_key(key: tuple[Any, ...]) -> bytes | None:
    """The C cache key of a `cache_key(...)` tuple, or None when C cannot serve it.

    (qname, qtype, qclass, DO) becomes the lower-cased wire name + type + class + DO byte:
    exactly what the C parser builds from a query. Names that `wire.name_text` escaped
    (a backslash) are never answered in C, so they are not mirrored. A policy key
    (..., policy index, mask) adds its index and mask.
    """
    qname, qtype, qclass, do = key[:4]
    if "\\" in qname or len(key) > 6:  # a subscriber's own lists: answered in Python
        return None
    try:
        out = wire.encode_name(qname) + struct.pack("!HHB", qtype, qclass, 1 if do else 0)
    except (wire.WireError, UnicodeEncodeError):
        return None
    if len(key) > 4:
        index, mask = key[4:6]
        out += struct.pack("!BQ", index, mask)
    return out


def _networks(nets: Any, value: int = 0) -> list[tuple[int, bytes, int, int]]:
    out = []
    for net in nets:
        net = ipaddress.ip_network(net, strict=False)
        out.append((net.version, net.network_address.packed, net.prefixlen, value))
    return out


def block_templates(blocker: Any) -> list[tuple[int, int, int, bytes]]:
    """(rcode, ancount, nscount, records) for A, AAAA and any other type, cut from what
    `blocker.body` answers, so the block rules live only in blocking.py."""
    out = []
    for qtype in _TEMPLATE_TYPES:
        question = b"\x00" + struct.pack("!HH", qtype, wire.CLASS_IN)
        body = blocker.body(wire.Query(0, 0, "", qtype, wire.CLASS_IN, question, None))
        _, flags, _, an, ns, ar = wire.HEADER.unpack_from(body, 0)
        if ar:
            raise ValueError("block templates carry no additional records")
        out.append((flags & 0xF, an, ns, body[12 + len(question) :]))
    return out


class UdpFastPath:
    """Serves the UDP listeners of `server` through the C fast path.

    Args:
        server: the `DnsServer` (its resolver, and `handle_datagram` for the hand-over).
        udp_size: our EDNS payload size.
    """

    def __init__(self, server: Any, udp_size: int) -> None:
        if FastPath is None:
            raise RuntimeError("the fast path extension is not built")
        self.server = server
        resolver = server.resolver
        cache = resolver.cache
        self.fp = FastPath(
            udp_size,
            cache.max_entries if cache is not None else 0,
            cache.prefetch if cache is not None else False,
            cache.prefetch_threshold if cache is not None else 0.1,
            cache.prefetch_min_hits if cache is not None else 3,
        )
        self.fp.set_acl(_networks(resolver.acl.allow), _networks(resolver.acl.deny))
        self.fp.set_templates(block_templates(resolver.blocker))
        if resolver.ratelimit is not None:
            # UDP queries are charged in C, before any hand-over to the Python chain.
            self.fp.set_ratelimit(resolver.ratelimit)
            resolver.udp_charged = True
        if cache is not None:
            cache.mirror = self
        self._matcher: Any = None
        self._blocker: Any = resolver.blocker
        self._policy_version: Any = None
        self._subscribers: Any = None  # the SubscriberTable C consults
        # subscribers.service.SubscriberView, set before serving when [subscribers] is on
        self._subscriber_view = getattr(getattr(resolver, "policies", None), "subscribers", None)
        self._npolicies = 0
        self._policy_punt: list[tuple[int, str]] = []
        self._policy_names: list[str] = []
        self._local: Any = None
        self._override_names: list[str] = []
        self._block_keys: dict[tuple[str, str], int] = {}
        self._block_names: list[tuple[str, str]] = []
        self.reasons = REASONS
        self.fallbacks: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._socks: list[socket.socket] = []
        self._senders: dict[int, Callable[[bytes, tuple[str, int]], None]] = {}
        # Misses forwarded from C (fastforward.py), when the upstream strategy allows it.
        # One per upstream set (the default first, then the forwarding rules' sets).
        self.pools: list[UpstreamPool] = UpstreamPool.for_sets(self)
        self._log_drainer: asyncio.TimerHandle | None = None
        # Policy name ("" without policies) -> (domain -> upstream set, the set of the
        # names no domain names): what `set_routes` gave C, for the query log's rows.
        self._routes: dict[str, tuple[dict[str, int], int]] = {}
        self._querylog: Any = None
        self._reconfigure_querylog(resolver.querylog)
        dnstap = getattr(resolver, "dnstap", None)
        if dnstap is not None:
            mode = ANONYMIZE_MODES.index(dnstap.mode)
            self.fp.set_dnstap(dnstap.client_query, dnstap.client_response, mode, dnstap.key,
                               dnstap.prefix(), TAP_BUFFER, FORWARDER_QUERY in dnstap.types,
                               FORWARDER_RESPONSE in dnstap.types)  # fmt: skip
            dnstap.more_dropped.append(lambda: int(self.fp.tap_dropped))
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        resolver.on_swap = self._swapped
        self.sync()

    # -- state from the resolver ----------------------------------------------------------

    def sync(self) -> None:
        """Pick up a new matcher (list reload, overrides), blocker or policy view."""
        resolver = self.server.resolver
        matcher = resolver.matcher
        changed = False
        if matcher is not self._matcher:
            self._matcher = matcher
            changed = True
            # The lists' objects live as long as the matcher: keep them out of the cyclic
            # GC's scans (a full collection over them stalled answers for milliseconds).
            gc.collect()
            gc.freeze()
            base, self._override_names = _layers(matcher)
            core = getattr(base, "_core", None)
            compiled = getattr(base, "compiled", None)
            if core is None or compiled is None:
                self.fp.set_matcher(None)  # not a filtercore.Matcher: Python decides
            else:
                self.fp.set_matcher(
                    core, base.text_rules_verdict if compiled.has_text_rules else None
                )
        if resolver.blocker is not self._blocker:
            self._blocker = resolver.blocker
            self.fp.set_templates(block_templates(resolver.blocker))
            self.fp.forget_blocks()
        local = getattr(resolver, "local", None)
        if local is not self._local:
            self._local = local
            changed = True
        if self._subscriber_view is not None:
            self._sync_subscribers()
        if self._sync_policies(resolver) or changed:
            self._sync_routes(local)

    def _sync_routes(self, local: Any) -> None:
        """Tell C where each name goes, per policy: its upstream set, or Python.

        Reviewers' overrides (reports/) are decided in Python: their names are punted for
        every policy, next to the policies' own punt names, local records and rewrites;
        those win over any forwarding rule. A locally served zone goes to Python (its
        NXDOMAIN) unless a rule at or below it names the name (`LocalData.route`).
        """
        indexes = range(self._npolicies or 1)
        names = self._policy_names or [""]
        own = self._policy_punt + [(i, n) for n in self._override_names for i in indexes]
        punt = list(own)
        if local is not None:
            punt += [(i, n) for i in indexes for n in local.punt_names(names[i])]
        self.fp.set_punt_names(punt)  # upstream answers naming these go to Python
        routes: list[tuple[int, str, int]] = []
        roots: list[int] = []
        by_policy: dict[str, tuple[dict[str, int], int]] = {}
        for i in indexes:
            hard = {n for index, n in own if index == i}
            table: dict[str, int] = {}
            root = 0
            if local is not None:
                policy = names[i]
                hard |= local.local_names(policy)
                table.update(dict.fromkeys(local.served, -1))
                for domain, forwarder in local.rules_for(policy).items():
                    if domain == ROOT:
                        root = self._set_of(forwarder)
                    else:
                        table[domain] = self._set_of(forwarder)
            table.update(dict.fromkeys(hard, -1))
            # A rule's domain below a punt name is Python's too: punt names cover their
            # whole subtree, whatever a more specific domain says.
            for domain, value in table.items():
                if value >= 0 and any(s in hard for s in suffixes(domain)):
                    table[domain] = -1
            routes += [(i, domain, value) for domain, value in table.items()]
            roots.append(root)
            by_policy[names[i]] = (table, root)
        self.fp.set_routes(routes, roots)
        self._routes = by_policy  # one assignment: the query log's writer reads it

    def _set_of(self, forwarder: Any) -> int:
        """The upstream set C forwards `forwarder`'s names with, or -1 (Python does)."""
        if not self.pools:
            return 0  # C forwards nothing: its cache hits are all a route decides
        for pool in self.pools:
            if pool.forwarder is forwarder:
                return pool.index
        return -1

    def _swapped(self) -> None:
        """After a swap of the lists (or overrides, or settings): C would cache the answers
        to queries it forwarded under the old rules, so they are asked again through the
        Python chain under the new ones (the upstream pool is opened anew)."""
        if not self.pools or not self._socks:
            return
        self.flush()
        for pool in self.pools:
            pool.close(again=True)
        self.pools = UpstreamPool.for_sets(self)
        for pool in self.pools:
            pool.start()

    def reconfigure(self) -> None:
        """Take the resolver's new parts after a config reload (`Resolver.take_settings`).

        Runs on the event loop, so between two batches. The C cache is emptied (the
        policies or the blocking rules its answers were stored under may have changed);
        the ACL, the cache settings, the query log and the upstream pool are set anew,
        and the next `sync` copies the blocker's templates and the policies again.
        """
        resolver = self.server.resolver
        cache = resolver.cache
        self.fp.set_cache(
            cache.max_entries if cache is not None else 0,
            cache.prefetch if cache is not None else False,
            cache.prefetch_threshold if cache is not None else 0.1,
            cache.prefetch_min_hits if cache is not None else 3,
        )
        if cache is not None:
            cache.mirror = self
        self.fp.set_acl(_networks(resolver.acl.allow), _networks(resolver.acl.deny))
        if resolver.policies is None and self._npolicies:
            self.fp.clear_policies()
            self._npolicies = 0
            self._policy_punt = []
        self._policy_version = None
        self._matcher = None  # punt names again, for the policies there are now
        self._reconfigure_querylog(resolver.querylog)
        self.flush()  # the forwarded counts so far belong to the old upstreams
        for pool in self.pools:
            pool.close(again=True)
        self.pools = UpstreamPool.for_sets(self)
        if self._socks:
            for pool in self.pools:
                pool.start()
        self.sync()

    def _reconfigure_querylog(self, querylog: Any) -> None:
        if querylog is self._querylog:
            return
        if self._querylog is not None:
            # Lines C wrote under the old settings go to the old log before it closes.
            self._querylog.log_formatted(self.fp.take_log())
        self._querylog = querylog
        if querylog is None:
            self.fp.stop_querylog()
            return
        anonymize, key, qtypes = querylog.fast_path_settings()
        self.fp.set_querylog(anonymize, key, qtypes, LOG_BUFFER)
        querylog.earlier_lines = self.fp.take_log
        querylog.fast_upstream = self._forwarding_to
        if self._socks and self._log_drainer is None:
            self._log_drainer = asyncio.get_running_loop().call_later(
                LOG_DRAIN_SECONDS, self._drain_log
            )

    def _forwarding_to(self, qname: str, policy: str | None) -> str | None:
        """The upstream C forwarded `qname` to for `policy` (the query log's rows name it):
        the set of its most specific `[[forward]]` domain, as C's `_route` chooses, else
        the policy's root set. C's log lines do not say which set answered."""
        pools = self.pools
        if not pools:
            return None
        index = 0
        routes = self._routes.get(policy or "")
        if routes is None and self._routes:
            routes = next(iter(self._routes.values()))  # no policies: the one table
        if routes is not None:
            table, index = routes
            if table:
                index = next((table[s] for s in suffixes(qname) if s in table), index)
        pool = pools[index] if 0 <= index < len(pools) else None
        return pool.upstream.name if pool is not None and pool.upstream is not None else None

    def _sync_subscribers(self) -> None:
        """Hand C the subscribers' table (mapped again when the writer replaced it)."""
        table = self._subscriber_view.current()
        if table is not self._subscribers:
            self._subscribers = table
            self.fp.set_subscribers(table)

    def _sync_policies(self, resolver: Any) -> bool:
        """Copy a changed policy view into C; True when it changed."""
        table = getattr(resolver, "policies", None)
        if table is None:
            return False
        view = table.fast_view()
        if view.version == self._policy_version:
            return False
        self._policy_version = view.version
        masks, python, punt = [], [], []
        for index, policy in enumerate(view.policies):
            masks.append(policy.mask & 0xFFFFFFFFFFFFFFFF)
            # What C does not implement of the contract goes to Python for that policy:
            # allowances (punt_mask) and block modes other than the global one. Punt names
            # (safe search, canaries, own entries) and trusted forwarders are checked in C.
            python.append(
                bool(policy.punt_mask)
                or policy.mode != self._blocker.mode
                or policy.ttl != self._blocker.ttl
            )
            punt += [(index, name) for name in policy.punt_names]
        trusted = [(fam, packed, prefix, 0) for fam, packed, prefix in view.trusted_forwarders]
        self.fp.set_policies(
            list(view.networks), view.default_index, masks, python, trusted,
            view.client_ids, view.client_id_networks,
        )
        self._npolicies = len(masks)
        self._policy_punt = punt
        self._policy_names = [policy.name for policy in view.policies]
        return True

    # -- the Cache mirror (called by dns_resolver.steps.cache.Cache) -----------------------------

    def store(self, key: tuple[Any, ...], entry: CacheEntry) -> None:
        """Mirror a stored entry into the C cache."""
        ckey = wire_key(key)
        if ckey is not None:
            self.fp.store(
                ckey, entry.body, entry.offsets, entry.ttls, entry.stored, entry.ttl, entry.ede
            )

    def fetch(self, key: tuple[Any, ...]) -> CacheEntry | None:
        """What C cached under `key` by itself (answers it forwarded), or None."""
        ckey = wire_key(key)
        found = self.fp.fetch(ckey) if ckey is not None else None
        if found is None:
            return None
        body, offsets, ttls, stored, lifetime, ede = found
        return CacheEntry(body, offsets, ttls, stored, lifetime, ede)

    def discard(self, key: tuple[Any, ...]) -> None:
        ckey = wire_key(key)
        if ckey is not None:
            self.fp.discard(ckey)

    def clear(self) -> None:
        self.fp.clear()

    # -- sockets ---------------------------------------------------------------------------

    def attach(self, sock: socket.socket) -> None:
        """Serve `sock` (a bound, non-blocking UDP socket) from the running loop."""
        loop = asyncio.get_running_loop()
        self._socks.append(sock)
        self._senders[sock.fileno()] = _sender(sock)
        loop.add_reader(sock.fileno(), self._readable, sock)
        if len(self._socks) == 1:
            for pool in self.pools:
                pool.start()
            resolver = self.server.resolver
            if resolver.querylog is not None or getattr(resolver, "dnstap", None) is not None:
                self._log_drainer = loop.call_later(LOG_DRAIN_SECONDS, self._drain_log)
        metrics = self.server.resolver.metrics
        if self._flusher is None and metrics is not None:
            self._loop = loop
            self._flusher = loop.create_task(self._flush_loop())
            metrics.on_scrape(self._flush_for_scrape)

    def close(self) -> None:
        """Stop watching and close the sockets; flush the counters one last time."""
        loop = asyncio.get_running_loop()
        for pool in self.pools:
            pool.close()
        if self._log_drainer is not None:
            self._log_drainer.cancel()
            self._log_drainer = None
            self._drain_log(again=False)
        for sock in self._socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        self._senders.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.flush()

    def _readable(self, sock: socket.socket) -> None:
        self.sync()
        rest = self.fp.serve(sock.fileno(), ROUNDS)
        if not rest:
            return
        send = self._senders[sock.fileno()]
        for data, host, port, reason, code in rest:
            name = REASONS[reason]
            self.fallbacks[name] += 1
            out = self.server.handle_datagram(data, (host, port), send)
            if name == "new_block" and isinstance(out, bytes):
                self.learn(data, host, code, out)

    def learn(
        self, data: bytes, client: str, code: int, answer: bytes, client_id: str | None = None
    ) -> None:
        """Memoise the EDE of a block Python just answered, for the C path to replay
        (`client_id`: the ClientID the query came with, which may choose its policy)."""
        resolver = self.server.resolver
        policies = getattr(resolver, "policies", None)
        policy = 0
        try:
            query = wire.parse_query(data)
            if policies is None:
                verdict = resolver.matcher.check(query.qname)
                if verdict.action.name != "BLOCK":
                    return
                ede = resolver.blocker.ede(verdict)
                labels = (verdict.category or "none", verdict.list or "none")
            else:
                # Under policies the EDE (policy name, code) is the one Python sent.
                policy = int(policies.select(client, None, client_id).policy.index)
                ede, labels = _ede_of(answer)
                if ede is None:
                    return
        except Exception:  # learning is an optimisation: never fail the query for it
            log.debug("could not learn the block of %r", data[:64], exc_info=True)
            return
        self.fp.learn_block(code, policy, ede, self._block_index(labels))

    def sender(self, fd: int) -> Callable[[bytes, tuple[str, int]], None]:
        """How to answer a client who asked on listener `fd`."""
        return self._senders[fd]

    def _block_index(self, labels: tuple[str, str]) -> int:
        index = self._block_keys.get(labels)
        if index is None:
            index = self._block_keys[labels] = len(self._block_names)
            self._block_names.append(labels)
            # The query log's fields for these blocks ("none" is how metrics say None).
            category, list_name = (None if v == "none" else v for v in labels)
            self.fp.label_block(
                index,
                f'"category":{json.dumps(category)},"list":{json.dumps(list_name)}'.encode(),
            )
        return index

    def _drain_log(self, again: bool = True) -> None:
        """Hand the lines (and dnstap frames) C wrote to their writer threads."""
        querylog = self.server.resolver.querylog
        if querylog is not None:
            querylog.log_formatted(self.fp.take_log())
        dnstap = getattr(self.server.resolver, "dnstap", None)
        if dnstap is not None:
            dnstap.frames(*self.fp.take_tap())
        if again:
            loop = asyncio.get_running_loop()
            self._log_drainer = loop.call_later(LOG_DRAIN_SECONDS, self._drain_log)

    # -- metrics ---------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    def _flush_for_scrape(self) -> None:
        """Flush from the scraping thread: the counters belong to the loop's thread (the C
        loop updates them without the GIL), so the flush runs there; bounded wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.flush()
            return
        done = asyncio.run_coroutine_threadsafe(self._flush_async(), loop)
        with contextlib.suppress(Exception):
            done.result(timeout=1.0)

    async def _flush_async(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Move the C counters into the resolver's `Metrics`."""
        metrics = self.server.resolver.metrics
        if metrics is None:
            return
        counts = self.fp.counters()
        queries: dict[tuple[int, str, str], int] = {}
        for result in ("cached", "blocked", "allowed"):
            for (qtype, transport), n in counts[result].items():
                queries[(qtype, transport, result)] = n
        blocks = {self._block_names[i]: n for i, n in counts["blocks"].items()}
        metrics.merge_counts(
            queries=queries,
            blocks=blocks,
            latency=counts["latency"],
            latency_sum=counts["latency_sum"],
            cache_hits=counts["cache_hits"],
            cache_misses=counts["cache_misses"],
        )
        for pool in self.pools:
            if pool.upstream is None:
                continue
            upstream = counts["upstream"][pool.index]
            errors = {"spoofed": upstream["spoofed"], "garbage": upstream["garbage"]}
            metrics.merge_upstream(
                pool.upstream.name,
                queries=upstream["queries"],
                latency=upstream["latency"],
                latency_sum=upstream["latency_sum"],
                errors=errors,
            )

    def collect(self) -> Iterator[Any]:
        """Prometheus families: answers kept in C and hand-overs to Python by reason."""
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(
            "filterdns_fastpath_answers",
            "Answers produced by the C fast path, UDP and TCP (cache hits, blocks, "
            "forwarded misses).",
            value=self.fp.fast_answers,
        )
        yield CounterMetricFamily(
            "filterdns_fastpath_batches",
            "recvmmsg calls that returned datagrams (datagrams / batches = batch size).",
            value=self.fp.batches,
        )
        yield CounterMetricFamily(
            "filterdns_fastpath_datagrams",
            "UDP datagrams received by the fast path.",
            value=self.fp.datagrams,
        )
        family = CounterMetricFamily(
            "filterdns_fastpath_fallbacks",
            "Queries the fast path (UDP and TCP) handed to the Python chain, by reason.",
            labels=["reason"],
        )
        for reason, n in self.fallbacks.items():
            family.add_metric([reason], n)
        yield family


def _layers(matcher: Any) -> tuple[Any, list[str]]:
    """(the filtercore matcher under `matcher`, the names of reviewers' overrides above it).

    `reports.overrides.LayeredMatcher` keeps its `filtercore.Matcher` as `base`; C walks
    that, and the override names go to Python."""
    overrides = getattr(matcher, "overrides", None)
    base = getattr(matcher, "base", None)
    if overrides is None or base is None or not hasattr(overrides, "hosts"):
        return matcher, []
    return base, list(overrides.hosts())


def _sender(sock: socket.socket) -> Callable[[bytes, tuple[str, int]], None]:
    def send(out: bytes, addr: tuple[str, int]) -> None:
        # A full send buffer drops the answer; the client retries (as with any UDP loss).
        with contextlib.suppress(BlockingIOError, OSError):
            sock.sendto(out, addr)

    return send


def _ede_of(answer: bytes) -> tuple[bytes | None, tuple[str, str]]:
    """The EDE option of an answer (re-encoded) and its (category, list) labels."""
    from dns_resolver import edns

    codes = edns.ede_codes(answer)
    if not codes:
        return None, ("none", "none")
    code, text = codes[0]
    found = _EDE_FIELDS.search(text)
    labels = (found.group(1), found.group(2)) if found else ("none", "none")
    return edns.ede_option(code, text), labels

"""Newly observed domains and the leads they raise (`[observed]`, `[leads]`; docs/leads.md).

The C fast path hands every cache miss's name and client network (cut to
`leads.ipv4_prefix`/`ipv6_prefix` bits: addresses never reach Python) to the C filters
(`dns_resolver/fast/_observed.pyx`). Most clients of a domain hit the cache, so a cache entry also
passes on its first `NETWORKS_KEPT * min_clients` hits; after that a hit costs one untaken
branch. Queries only the Python chain sees (TCP, DoH, names a policy hands to Python before
the cache) are not tracked.

- **Registrable domain** (in C): tldextract's bundled Public Suffix List snapshot, offline
  (no download at run time), as a hash set of its rules; `registrable()` is the same
  function for Python.
- **Seen before?** (in C) `BloomPair`: two Bloom filters of `observed.memory / 2` bytes
  each, sized by the classic formulas for `observed.false_positive_rate`. New domains go
  into the current filter; when it holds its capacity or half the window has passed, the
  older one is dropped and a fresh one started, so a domain is remembered between window/2
  and window and memory never grows. A domain in neither filter is newly observed: only
  these, and a candidate's next queries (up to its record budget), become records, which
  `Tracker.feed` takes every `DRAIN_SECONDS`.
- **Candidates.** A newly observed domain is counted, logged and held for `leads.window`
  with its query count and the hashes of its client networks (a bounded set: counts, never
  addresses). One that reaches `min_clients` and `min_queries` is examined once: its
  signals are gathered and, if it has one (or `require_signal` is off), it is raised as a
  lead through the `raise_lead` callable (`reports.service.AdminService.raise_lead`),
  at most `max_per_day` a day.
- **Signals.** The lists' text rules on the name under every category (suspect-only: a
  keyword a child policy would block counts even where no policy blocks it); the answer's
  CNAME targets and addresses that a list places in a category (`inspect.inspect_answer`
  on a fresh upstream answer); a look-alike (edit distance 1) of a host a reviewer blocked.

Each worker process keeps its own filters (nothing is locked or shared per query). With
`server.workers > 1` the candidates are counted in one place: the other workers send their
records (the small stream of newly observed domains and candidates' queries) to worker 0
over a Unix datagram socket the supervisor made before forking (`LeadsLink`), and worker 0's
tracker counts every worker's client networks, reviews and raises the leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dnslib
import tldextract

from dns_resolver import wire
from dns_resolver.fast._observed import Observed, registrable_of, set_rules
from dns_resolver.steps.inspect import inspect_answer
from fdconfig.leads import LeadsConfig
from fdconfig.observed import ObservedConfig
from filtercore.errors import InvalidNameError

log = logging.getLogger(__name__)

DRAIN_SECONDS = 0.5  # how often the C records are handed to the tracker
OBSERVE_BUFFER = 1 << 20  # bytes of C records between drains (a full buffer drops, counted)
NETWORKS_KEPT = 4  # a candidate keeps up to this many times min_clients network hashes
DAY = 86_400.0
NEW, WATCHED = 1, 2  # a record's kind (_observed.pxd)

_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
# The ICANN section of tldextract's bundled Public Suffix List, as its rule strings
# ("co.uk", "*.ck", "!www.ck"), for C.
set_rules(_EXTRACT._get_tld_extractor().tlds_excl_private)

# The C filters: two rotating Bloom filters plus what C records for the Tracker.
BloomPair = Observed


def registrable(name: str) -> str | None:
    """The registrable domain of `name` (`www.example.co.uk` -> `example.co.uk`), or None
    for a public suffix itself, an IP literal or a name under no known suffix (as
    tldextract says). The C function the fast path uses."""
    name = name.rstrip(".").lower()
    if name.rsplit(".", 1)[-1].isdigit():
        return None  # an IPv4 literal (C knows ASCII digits only)
    found = registrable_of(name.encode())
    return None if found is None else found.decode()


@dataclass
class Candidate:
    """A newly observed domain within its lead window."""

    domain: str
    name: str  # the first full name asked (what the signals look up)
    first_seen: float
    queries: int = 0
    networks: set[int] = field(default_factory=set)  # hashes of client networks, bounded
    examined: bool = False


def lookalike(domain: str, hosts: Iterable[str]) -> str | None:
    """A host of `hosts` whose registrable domain is one edit (insert, delete, substitute,
    transpose) from `domain`'s, or None."""
    label = domain.split(".", 1)[0]
    for host in hosts:
        other = registrable(host)
        if other is None or other == domain:
            continue
        if _one_edit(label, other.split(".", 1)[0]):
            return host
    return None


def _one_edit(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


@dataclass(frozen=True)
class Lead:
    """What a raised lead carries into the queue."""

    domain: str
    category: str | None
    evidence: dict[str, Any]


class Tracker:
    """Newly observed domains of one worker and the leads they raise.

    Args:
        observed, leads: the `[observed]` and `[leads]` configuration.
        matcher: returns the resolver's effective matcher (text rules, lists, overrides).
        lookup: resolves a name upstream to the wire answer (None: no answer signals).
        raise_lead: puts a lead in the queue (None: leads are only logged).
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        observed: ObservedConfig,
        leads: LeadsConfig,
        matcher: Callable[[], Any],
        *,
        lookup: Callable[[str], Awaitable[bytes | None]] | None = None,
        raise_lead: Callable[[Lead], Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leads = leads
        self._keep = NETWORKS_KEPT * leads.min_clients
        self.filters = BloomPair(
            observed.memory, observed.false_positive_rate, observed.window, clock()
        )
        self.filters.records(
            OBSERVE_BUFFER, max(self._keep, leads.min_queries), leads.window,
            leads.max_candidates,
        )
        self._matcher = matcher
        self._lookup = lookup
        self._raise = raise_lead
        self._clock = clock
        self.candidates: OrderedDict[str, Candidate] = OrderedDict()
        self._day_start = clock()
        self.raised_today = 0
        # Counters (metrics and the replay's report).
        self.new = 0
        self.raised = 0
        self.not_raised = 0  # examined, no signal (with require_signal)
        self.over_budget = 0  # would have been raised past max_per_day

    @property
    def misses(self) -> int:
        """Misses (and new entries' first hits) the filters looked at."""
        return self.filters.noted

    # -- input ------------------------------------------------------------------------------

    def feed(self, records: bytes) -> None:
        """Take the C filters' records (`Observed.take`)."""
        view = memoryview(records)
        pos, end = 0, len(records)
        record = self._record
        while pos < end:
            size, offset, kind = records[pos + 17 : pos + 20]
            start = pos + 20
            name = records[start : start + size]
            record(name.decode(), name[offset:].decode(), kind, hash(view[pos : pos + 17]))
            pos = start + size

    def observe(self, name: str, network: int) -> None:
        """One cache miss of `name` from the client network numbered `network` (a miss
        Python saw: tests, the replay)."""
        encoded = name.rstrip(".").lower().encode()
        if 0 < len(encoded) < 256:
            self.filters.observe(encoded, network.to_bytes(17, "big"), self._clock())
        self.feed(self.filters.take())

    def _record(self, name: str, domain: str, kind: int, network: int) -> None:
        candidate = self.candidates.get(domain)
        if candidate is None:
            if kind != NEW:
                return  # a candidate dropped meanwhile
            self.new += 1
            log.info("newly observed domain %s", domain)
            candidate = self.candidates[domain] = Candidate(domain, name, self._clock())
            if len(self.candidates) > self.leads.max_candidates:
                self.filters.forget(self.candidates.popitem(last=False)[0])
        candidate.queries += 1
        if len(candidate.networks) < self._keep:
            candidate.networks.add(network)

    # -- review -----------------------------------------------------------------------------

    def due(self) -> list[Candidate]:
        """Drop candidates past the window; those that earned attention, not yet examined."""
        now = self._clock()
        window = self.leads.window
        while self.candidates:
            oldest = next(iter(self.candidates.values()))
            if now - oldest.first_seen < window:
                break
            self.filters.forget(self.candidates.popitem(last=False)[0])
        return [
            c
            for c in self.candidates.values()
            if not c.examined
            and len(c.networks) >= self.leads.min_clients
            and c.queries >= self.leads.min_queries
        ]

    async def review(self) -> list[Lead]:
        """Examine the candidates that earned attention; raise those with reasons."""
        out = []
        now = self._clock()
        if now - self._day_start >= DAY:
            self._day_start, self.raised_today = now, 0
        for candidate in self.due():
            candidate.examined = True
            self.filters.forget(candidate.domain)  # its next queries need not reach Python
            signals = await self.signals(candidate)
            if not signals and self.leads.require_signal:
                self.not_raised += 1
                continue
            if self.raised_today >= self.leads.max_per_day:
                self.over_budget += 1
                continue
            self.raised_today += 1
            self.raised += 1
            lead = Lead(
                candidate.domain,
                next((s["category"] for s in signals if s.get("category")), None),
                {
                    "source": "observed",
                    "name": candidate.name,
                    "client_networks": len(candidate.networks),
                    "queries": candidate.queries,
                    "window_seconds": self.leads.window,
                    "signals": signals,
                },
            )
            log.info("lead raised for %s: %s", lead.domain, lead.evidence)
            if self._raise is not None:
                try:
                    await self._raise(lead)
                except Exception:  # the queue being down must not stop the tracking
                    log.exception("cannot put the lead for %s in the queue", lead.domain)
            out.append(lead)
        return out

    async def signals(self, candidate: Candidate) -> list[dict[str, Any]]:
        """Why `candidate` deserves a reviewer: each signal a dict with `signal`, `detail`
        and, when a list names one, `category`."""
        matcher = self._matcher()
        out: list[dict[str, Any]] = []
        text_rules = getattr(matcher, "text_rules_verdict", None)
        if text_rules is not None and getattr(matcher, "compiled", None) is not None:
            verdict = text_rules(candidate.name)
            if verdict is not None and verdict.blocked:
                out.append(_signal("text_rule", verdict, f"rule={verdict.rule}"))
        if self._lookup is not None:
            answer = await self._lookup(candidate.name)
            if answer is not None:
                try:
                    found = inspect_answer(matcher, answer)
                except (wire.WireError, InvalidNameError):
                    found = None
                if found is not None:
                    verdict, what = found
                    kind = "cname_target" if what.startswith("cname=") else "answer_address"
                    out.append(_signal(kind, verdict, what))
        overrides = getattr(matcher, "overrides", None)
        if overrides is not None:
            blocked = [h for h, action in overrides.hosts().items() if action == "block"]
            twin = lookalike(candidate.domain, blocked)
            if twin is not None:
                verdict = overrides.check(twin)
                out.append(_signal("lookalike", verdict, f"lookalike_of={twin}"))
        return out


def _signal(kind: str, verdict: Any, detail: str) -> dict[str, Any]:
    return {
        "signal": kind,
        "detail": detail,
        "category": getattr(verdict, "category", None),
        "list": getattr(verdict, "list", None),
    }


def upstream_lookup(forwarder: Any) -> Callable[[str], Awaitable[bytes | None]]:
    """A `Tracker` lookup through the resolver's upstreams (an A query, as asked)."""

    async def lookup(name: str) -> bytes | None:
        query = wire.parse_query(dnslib.DNSRecord.question(name, "A").pack())
        try:
            return await asyncio.wait_for(forwarder.resolve(query), forwarder.timeout * 3)
        except (TimeoutError, OSError):
            return None

    return lookup


LINK_DATAGRAM = 32 << 10  # bytes of records per datagram between workers (whole records)
LINK_RCVBUF = 4 << 20  # the counting worker's socket buffer, between two drains


def leads_sockets() -> tuple[socket.socket, socket.socket]:
    """The supervisor's pair, before forking: (the counting worker's inbox, the others'
    outbox)."""
    inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (inbox, outbox):
        sock.setblocking(False)
    with contextlib.suppress(OSError):  # capped by net.core.rmem_max: best effort
        inbox.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LINK_RCVBUF)
    return inbox, outbox


class LeadsLink:
    """A worker's end of the records' way to the worker that counts them (`owner`)."""

    def __init__(self, owner: bool, inbox: socket.socket, outbox: socket.socket) -> None:
        self.owner = owner
        self.inbox = inbox
        self.outbox = outbox
        self.dropped = 0  # records' datagrams the counting worker had no room for

    def send(self, records: bytes) -> None:
        """Send `records` to the counting worker, cut between records."""
        pos, end = 0, len(records)
        while pos < end:
            stop = pos
            while stop < end and stop - pos + 20 + records[stop + 17] <= LINK_DATAGRAM:
                stop += 20 + records[stop + 17]
            try:
                self.outbox.send(records[pos:stop])
            except OSError:  # full (the owner is behind) or gone (it restarts)
                self.dropped += 1
            pos = stop

    def receive(self) -> Iterator[bytes]:
        """The records the other workers sent since the last call."""
        while True:
            try:
                yield self.inbox.recv(LINK_DATAGRAM)
            except OSError:  # empty
                return


class Observer:
    """Drains the fast path's records into a `Tracker` and reviews it, on the loop.

    Args:
        tracker: the worker's tracker.
        link: with several workers, the way to the one that counts (None: this one).
    """

    def __init__(self, tracker: Tracker, link: LeadsLink | None = None) -> None:
        self.tracker = tracker
        self.link = link
        self.counts = link is None or link.owner  # this worker holds the candidates
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start draining; call from the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def drain(self) -> None:
        records = self.tracker.filters.take()
        if not self.counts:
            assert self.link is not None
            self.link.send(records)
            return
        self.tracker.feed(records)
        if self.link is not None:
            for chunk in self.link.receive():
                self.tracker.feed(chunk)

    def collect(self) -> Iterator[Any]:
        """Prometheus families of the tracking (a `Metrics` registry collector)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        tracker = self.tracker
        counters = (
            ("filterdns_observed_records", "Misses (and new entries' first hits) tracked.",
             tracker.misses),
            ("filterdns_observed_domains", "Newly observed registrable domains.", tracker.new),
            ("filterdns_observed_dropped",
             "Records dropped: the C buffer, or the counting worker's socket, was full.",
             tracker.filters.dropped + (self.link.dropped if self.link is not None else 0)),
            ("filterdns_leads_raised", "Leads put in the review queue.", tracker.raised),
            ("filterdns_leads_without_signal",
             "Candidates that earned attention but had no signal (require_signal).",
             tracker.not_raised),
            ("filterdns_leads_over_daily_cap", "Leads not raised: max_per_day was spent.",
             tracker.over_budget),
        )
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "filterdns_observed_candidates", "Newly observed domains within the lead window.",
            value=len(tracker.candidates),
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_SECONDS)
            try:
                self.drain()
                if self.counts:
                    await self.tracker.review()
            except Exception:  # the next round must still run whatever this one met
                log.exception("newly observed domains: a round failed")


def start_observer(
    config: Any, resolver: Any, fast: Any, admin: Any, link: LeadsLink | None = None
) -> Observer:
    """The worker's `Observer` for `config` (`[observed]` enabled): C records misses from
    now on; leads go to `admin`'s queue when the admin API runs here. With `link` (several
    workers) the records go to, or come from, the other workers."""
    leads = config.leads
    fp = fast.fp if fast is not None else None
    raise_lead = None
    if admin is not None:
        service = admin.service

        async def raise_lead(lead: Lead) -> Any:
            return await service.raise_lead(lead.domain, lead.category, lead.evidence)

    tracker = Tracker(
        config.observed,
        leads,
        lambda: resolver.matcher,
        lookup=upstream_lookup(resolver.forwarder),
        raise_lead=raise_lead,
    )
    if fp is not None:
        fp.set_observe(
            tracker.filters, leads.ipv4_prefix, leads.ipv6_prefix,
            NETWORKS_KEPT * leads.min_clients,
        )
    observer = Observer(tracker, link)
    if resolver.metrics is not None:
        resolver.metrics.registry.register(observer)
    observer.start()
    return observer

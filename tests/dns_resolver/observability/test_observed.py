"""The observed-domains structure (false positives against the prediction, fixed memory) and
the tracker's lead rules, on real matchers and a clock the test moves."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dns_resolver.observability.observed import (
    LINK_DATAGRAM,
    BloomPair,
    Lead,
    LeadsLink,
    Tracker,
    leads_sockets,
    lookalike,
    registrable,
)
from fdconfig.leads import LeadsConfig
from fdconfig.observed import ObservedConfig
from filtercore import ListSpec, Matcher
from reports.overrides import LayeredMatcher, OverrideMatcher
from tests.dns_resolver.harness import InProcessServer, NsdServer, TestZone, query
from tests.dns_resolver.policy_zone import _zone
from tests.filtercore.formats_support import UT1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_registrable_domains_come_from_the_public_suffix_list() -> None:
    assert registrable("www.example.co.uk") == "example.co.uk"
    assert registrable("a.b.example.com") == "example.com"
    assert registrable("co.uk") is None
    assert registrable("192.0.2.1") is None


def test_registrable_domains_agree_with_tldextract_on_real_names() -> None:
    """`registrable` is the C function the fast path calls (dns_resolver/fast/_observed.pyx)."""
    from dns_resolver.observability.observed import _EXTRACT

    names = [
        "www.example.co.uk", "a.b.c.kawasaki.jp", "city.kawasaki.jp", "x.city.kawasaki.jp",
        "www.ck", "foo.www.ck", "bar.ck", "a.bar.ck", "example.com.", "WWW.Example.COM",
        "localhost", "test", "a.b.unknowntld", "xn--bcher-kva.de", "s3.amazonaws.com",
    ]
    for category in ("gambling", "dating", "vpn"):
        names += (UT1 / category / "domains").read_text(errors="replace").split()[:3000]
    for name in names:
        parts = _EXTRACT(name)
        whole = parts.domain and parts.suffix
        expected = f"{parts.domain}.{parts.suffix}".lower() if whole else None
        assert registrable(name) == expected, name


def test_false_positive_rate_is_the_predicted_one() -> None:
    bloom = BloomPair(1 << 16, 0.01, window=1e9)
    # Both filters at capacity: the worst case the configuration states.
    for generation in range(2):
        for i in range(bloom.capacity - 1):
            assert bloom.add(f"g{generation}-{i}.example") in (True, False)
        bloom.rotate()
        for i in range(bloom.capacity - 1):
            bloom.add(f"h{generation}-{i}.example")
    predicted = bloom.predicted_false_positive_rate(bloom.count)
    probes = 100_000
    taken_for_seen = sum(not bloom.add(f"fresh-{i}.test") for i in range(probes))
    # add() of a fresh name fills the filter too, so only its first probes see the stated
    # load; the rotation bound keeps the rest at or below it.
    measured = taken_for_seen / probes
    assert bloom.rotations >= 2
    assert 0.3 * predicted <= measured <= 1.5 * predicted, (measured, predicted)
    assert 0.005 < bloom.predicted_false_positive_rate() < 0.03  # ~2 x 1% for the pair


def test_false_positive_rate_of_two_full_filters_without_insertions() -> None:
    bloom = BloomPair(1 << 16, 0.01, window=1e9)
    for i in range(bloom.capacity - 1):
        bloom.add(f"old-{i}.example")
    bloom.rotate()
    for i in range(bloom.capacity - 1):
        bloom.add(f"new-{i}.example")
    predicted = bloom.predicted_false_positive_rate(bloom.count)
    probes = 100_000
    seen = sum(bloom.seen(f"probe-{i}.test") for i in range(probes))
    assert abs(seen / probes - predicted) < 0.25 * predicted, (seen / probes, predicted)


def test_memory_stays_at_the_configured_size() -> None:
    memory = 1 << 14
    clock = Clock()
    tracker = Tracker(
        ObservedConfig(enabled=True, memory=memory, false_positive_rate=0.01, window=3600.0),
        LeadsConfig(max_candidates=1000),
        lambda: None,
        clock=clock,
    )
    assert tracker.filters.nbytes == memory
    tracemalloc.start()
    try:
        for i in range(5_000):  # warm the registrable-domain memo and the candidate table
            tracker.observe(f"www.warm{i}.com", i)
        before, _ = tracemalloc.get_traced_memory()
        for i in range(30_000):
            tracker.observe(f"www.site{i}.com", i % 50)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tracker.filters.rotations > 0  # far more domains than the filters hold
    assert tracker.filters.nbytes == memory
    assert len(tracker.candidates) == 1000
    # What grew is bounded by the memo and the candidate table, not the domains seen.
    assert after - before < 16 << 20, after - before
    assert tracker.new > 28_000


def _keyword_matcher(tmp_path: Path) -> Matcher:
    keywords = tmp_path / "gamble.txt"
    keywords.write_text("casino$substring\n")
    return Matcher.from_lists([ListSpec(str(keywords), format="keywords", category="gambling")])


def _tracker(matcher: object, clock: Clock, raised: list[Lead], **leads: object) -> Tracker:
    async def raise_lead(lead: Lead) -> None:
        raised.append(lead)

    return Tracker(
        ObservedConfig(enabled=True, memory=1 << 16),
        LeadsConfig(**{"min_clients": 5, "window": 600.0, **leads}),  # type: ignore[arg-type]
        lambda: matcher,
        raise_lead=raise_lead,
        clock=clock,
    )


def test_enough_networks_and_a_suspect_text_rule_raise_one_lead(tmp_path: Path) -> None:
    clock = Clock()
    raised: list[Lead] = []
    tracker = _tracker(_keyword_matcher(tmp_path), clock, raised)
    for network in range(5):
        tracker.observe("play.bestcasino-new.com", network)
    for _ in range(10):
        tracker.observe("www.alone-casino.com", 99)  # one network, many queries
    for network in range(5):
        tracker.observe("www.harmless-new.com", network)  # clients, but no signal
    asyncio.run(tracker.review())
    assert [lead.domain for lead in raised] == ["bestcasino-new.com"]
    evidence = raised[0].evidence
    assert evidence["client_networks"] == 5 and evidence["queries"] == 5
    assert evidence["signals"][0]["signal"] == "text_rule"
    assert raised[0].category == "gambling"
    assert tracker.not_raised == 1
    asyncio.run(tracker.review())  # examined once only
    assert len(raised) == 1


def test_without_require_signal_clients_alone_raise_and_the_daily_cap_holds(
    tmp_path: Path,
) -> None:
    clock = Clock()
    raised: list[Lead] = []
    tracker = _tracker(_keyword_matcher(tmp_path), clock, raised, require_signal=False,
                       max_per_day=2)
    for site in range(4):
        for network in range(5):
            tracker.observe(f"www.site{site}.org", network)
    asyncio.run(tracker.review())
    assert len(raised) == 2 and tracker.over_budget == 2
    clock.now += 86_400
    for network in range(5):
        tracker.observe("www.nextday.org", network)
    asyncio.run(tracker.review())
    assert raised[-1].domain == "nextday.org"


def test_a_candidate_must_earn_attention_within_the_window(tmp_path: Path) -> None:
    clock = Clock()
    raised: list[Lead] = []
    tracker = _tracker(_keyword_matcher(tmp_path), clock, raised)
    for network in range(4):
        tracker.observe("www.slowcasino.net", network)
    clock.now += 601
    tracker.observe("www.slowcasino.net", 4)  # known now (in the filters), window over
    asyncio.run(tracker.review())
    assert raised == [] and "slowcasino.net" not in tracker.candidates


def test_a_lookalike_of_a_blocked_override_is_a_signal(tmp_path: Path) -> None:
    clock = Clock()
    raised: list[Lead] = []
    overrides = OverrideMatcher(
        [{"host": "bet365.com", "action": "block", "category": "gambling"}]
    )
    matcher = LayeredMatcher(overrides, _keyword_matcher(tmp_path))
    tracker = _tracker(matcher, clock, raised)
    for network in range(5):
        tracker.observe("www.bet366.com", network)
    asyncio.run(tracker.review())
    (lead,) = raised
    assert lead.evidence["signals"] == [
        {"signal": "lookalike", "detail": "lookalike_of=bet365.com", "category": "gambling",
         "list": "overrides"}
    ]


@pytest.mark.parametrize(
    ("domain", "hosts", "twin"),
    [
        ("bet366.com", ["bet365.com"], "bet365.com"),
        ("bte365.com", ["bet365.com"], "bet365.com"),
        ("bet3655.com", ["bet365.com"], "bet365.com"),
        ("bet365.com", ["bet365.com"], None),
        ("bet377.com", ["bet365.com"], None),
    ],
)
def test_lookalikes_are_one_edit_away(domain: str, hosts: list[str], twin: str | None) -> None:
    assert lookalike(domain, hosts) == twin


NEW_ZONE = "fresh-site.com."


@pytest.fixture
def new_domain_nsd(tmp_path: Path) -> Iterator[NsdServer]:
    zones = {NEW_ZONE: _zone(NEW_ZONE, "www IN A 192.0.2.60\nmail IN A 192.0.2.61\n")}
    server = NsdServer(tmp_path / "nsd", extra_zones=zones)
    server.start()
    yield server
    server.stop()


def test_c_records_a_new_domain_and_a_candidates_queries_with_networks_not_addresses(
    new_domain_nsd: NsdServer,
) -> None:
    matcher = Matcher.from_lists([])
    in_process = InProcessServer(matcher, [new_domain_nsd.upstream])
    with in_process as (port, server):
        fp = server.fast.fp

        async def on_loop(call: Callable[[], Any]) -> Any:
            return call()

        def run(call: Callable[[], Any]) -> Any:
            # The C state belongs to the loop's thread (it reads between batches there).
            return asyncio.run_coroutine_threadsafe(on_loop(call), in_process.loop).result(5)

        filters = BloomPair(1 << 16, 0.01, 3600.0)
        filters.records(1 << 16, 3, 600.0, 100)  # the new domain's query and 2 more
        run(lambda: fp.set_observe(filters, 24, 48, 5))
        for _ in range(6):  # a miss, then five cache hits (the entry passes on five)
            assert query(port, "www." + NEW_ZONE).rcode() == 0
        records = run(filters.take)
        name = b"www.fresh-site.com"
        head = bytes([4, 127, 0, 0, 0]) + bytes(12) + bytes([len(name), 4])
        # The /24, not .1; the first is new, then the candidate's budget; then known.
        assert records == head + b"\x01" + name + (head + b"\x02" + name) * 2
        assert filters.noted == 6
        assert query(port, "mail." + NEW_ZONE).rcode() == 0  # same domain: known now
        assert run(filters.take) == b""
        run(lambda: fp.set_observe(None, 24, 48))
        assert query(port, TestZone.MAIL).rcode() == 0
        assert filters.noted == 7


def test_records_between_workers_arrive_whole_and_are_counted_once() -> None:
    inbox, outbox = leads_sockets()
    try:
        sender = BloomPair(1 << 16, 0.01, 3600.0)
        sender.records(1 << 20, 100, 600.0, 5000)
        for i in range(3000):  # more than one datagram's worth of new domains
            sender.observe(f"www.new{i}.com".encode(), bytes([4, 10, 0, i >> 8, i & 0xFF]) +
                           bytes(12), 1.0)
        records = sender.take()
        assert len(records) > LINK_DATAGRAM
        LeadsLink(False, inbox, outbox).send(records)
        tracker = _tracker(None, Clock(), [])
        chunks = list(LeadsLink(True, inbox, outbox).receive())
        assert len(chunks) > 1 and b"".join(chunks) == records
        for chunk in chunks:
            tracker.feed(chunk)
        assert tracker.new == 3000 and len(tracker.candidates) == 3000
        assert all(len(c.networks) == 1 for c in tracker.candidates.values())
    finally:
        inbox.close()
        outbox.close()

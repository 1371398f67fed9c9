"""Unit tests for dns_resolver.steps.cache: TTLs by age, negative caching, LRU, serve-stale."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset

from dns_resolver import wire
from dns_resolver.steps.cache import Cache, cache_key, render


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def query(name: str = "www.example.com", qtype: str = "A", qid: int = 7) -> wire.Query:
    msg = dns.message.make_query(name, qtype)
    msg.id = qid
    return wire.parse_query(msg.to_wire())


def answer(name: str = "www.example.com", ttl: int = 300, rcode: int = 0,
           soa: tuple[int, int] | None = None, tc: bool = False) -> bytes:
    q = dns.message.make_query(name, "A")
    msg = dns.message.make_response(q)
    msg.set_rcode(rcode)
    if rcode == 0 and soa is None:
        msg.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", "192.0.2.1"))
    if soa is not None:
        soa_ttl, minimum = soa
        rdata = f"ns.example.com. h.example.com. 1 2 3 4 {minimum}"
        msg.authority.append(dns.rrset.from_text("example.com.", soa_ttl, "IN", "SOA", rdata))
    if tc:
        msg.flags |= 0x0200
    return msg.to_wire()


def make(clock: Clock, **kwargs: object) -> Cache:
    return Cache(clock=clock, **kwargs)  # type: ignore[arg-type]


def test_hit_patches_id_case_and_decrements_ttl() -> None:
    clock = Clock()
    cache = make(clock)
    q = query()
    assert cache.get(cache_key(q)) is None
    assert cache.store(cache_key(q), answer(ttl=300)) is not None
    clock.now += 100.7
    q2 = query("WWW.Example.COM", qid=99)
    hit = cache.get(cache_key(q2))
    assert hit is not None
    entry, age = hit
    msg = dns.message.from_wire(render(entry, q2, age))
    assert msg.id == 99
    assert msg.question[0].name.to_text() == "WWW.Example.COM."
    assert msg.answer[0].ttl == 200
    assert (cache.hits, cache.misses) == (1, 1)


def test_expiry() -> None:
    clock = Clock()
    cache = make(clock)
    q = query()
    cache.store(cache_key(q), answer(ttl=5))
    clock.now += 5
    assert cache.get(cache_key(q)) is None
    assert len(cache) == 0


def test_ttl_clamps() -> None:
    clock = Clock()
    cache = make(clock, min_ttl=60, max_ttl=120)
    entry = cache.store(cache_key(query()), answer(ttl=5))
    assert entry is not None and entry.ttl == 60
    entry = cache.store(cache_key(query()), answer(ttl=5000))
    assert entry is not None and entry.ttl == 120


def test_negative_caching_uses_soa_minimum() -> None:
    clock = Clock()
    cache = make(clock, negative_max_ttl=3600)
    q = query("nx.example.com")
    entry = cache.store(cache_key(q), answer("nx.example.com", rcode=3, soa=(3600, 60)))
    assert entry is not None and entry.ttl == 60
    clock.now += 10
    hit = cache.get(cache_key(q))
    assert hit is not None
    msg = dns.message.from_wire(render(hit[0], q, hit[1]))
    assert msg.rcode() == dns.rcode.NXDOMAIN and msg.authority[0].ttl == 50
    # The cap applies too, and without an SOA nothing is cached.
    capped = make(clock, negative_max_ttl=30)
    entry = capped.store(cache_key(q), answer("nx.example.com", rcode=3, soa=(3600, 600)))
    assert entry is not None and entry.ttl == 30
    assert cache.store(cache_key(q), answer("nx.example.com", rcode=3)) is None


def test_never_cache_truncated_or_servfail() -> None:
    cache = make(Clock())
    assert cache.store(cache_key(query()), answer(tc=True)) is None
    assert cache.store(cache_key(query()), answer(rcode=2)) is None
    assert len(cache) == 0


def test_lru_eviction() -> None:
    evicted: list[int] = []
    cache = make(Clock(), max_entries=2, on_evict=evicted.append)
    a, b, c = query("a.example.com"), query("b.example.com"), query("c.example.com")
    cache.store(cache_key(a), answer("a.example.com"))
    cache.store(cache_key(b), answer("b.example.com"))
    assert cache.get(cache_key(a)) is not None  # a is now the most recent
    cache.store(cache_key(c), answer("c.example.com"))
    assert cache.get(cache_key(b)) is None
    assert cache.get(cache_key(a)) is not None
    assert cache.evictions == 1 and evicted == [1]


def test_do_bit_is_part_of_the_key() -> None:
    plain = query()
    msg = dns.message.make_query("www.example.com", "A", want_dnssec=True)
    dnssec = wire.parse_query(msg.to_wire())
    assert cache_key(plain) != cache_key(dnssec)


def test_serve_stale() -> None:
    clock = Clock()
    cache = make(clock, serve_stale=True, stale_answer_ttl=30, stale_max_age=100)
    q = query()
    cache.store(cache_key(q), answer(ttl=10))
    clock.now += 50
    assert cache.get(cache_key(q)) is None  # expired: a miss, but kept
    stale = cache.get_stale(cache_key(q))
    assert stale is not None
    msg = dns.message.from_wire(render(stale, q, 0, stale_ttl=30))
    assert msg.answer[0].ttl == 30
    clock.now += 100
    assert cache.get_stale(cache_key(q)) is None
    assert make(clock).get_stale(cache_key(q)) is None


def test_prefetch_once_for_popular_entries_near_expiry() -> None:
    clock = Clock()
    cache = make(clock, prefetch=True, prefetch_threshold=0.1, prefetch_min_hits=2)
    q = query()
    cache.store(cache_key(q), answer(ttl=100))
    entry, age = cache.get(cache_key(q))  # type: ignore[misc]
    assert not cache.wants_prefetch(entry, age)
    clock.now += 95
    entry, age = cache.get(cache_key(q))  # type: ignore[misc]
    assert cache.wants_prefetch(entry, age)
    assert not cache.wants_prefetch(entry, age)


def test_discard_and_clear() -> None:
    cache = make(Clock())
    a, b = query("a.example.com"), query("b.example.com")
    cache.store(cache_key(a), answer("a.example.com"))
    cache.store(cache_key(b), answer("b.example.com"))
    cache.discard(cache_key(a))
    cache.discard(cache_key(a))
    assert cache.get(cache_key(a)) is None and len(cache) == 1
    cache.clear()
    assert len(cache) == 0

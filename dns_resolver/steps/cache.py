"""Response cache holding ready wire answers.

An entry is the upstream answer as bytes (ID zeroed, no OPT) plus the offsets and original
values of its TTL fields. A hit copies the client's header ID, RD/CD bits and question
(keeping the client's letter case), and rewrites each TTL as original minus age: no
message object is built, so a Cython fast path can do exactly the same on the same data.

- Key: (lower-cased qname, qtype, qclass, DO bit).
- Positive answers live for their smallest TTL, clamped to [min_ttl, max_ttl].
- Negative answers (NXDOMAIN, NODATA) live for min(SOA TTL, SOA MINIMUM) capped at
  negative_max_ttl (RFC 2308 section 5); without an SOA they are not cached.
- Truncated, SERVFAIL and other error answers are never cached.
- Bounded by max_entries with LRU eviction.
- Serve-stale (RFC 8767): an expired entry is kept up to stale_max_age past expiry and
  handed out, with TTL stale_answer_ttl, only when every upstream failed.
- Prefetch: a hit on a popular entry near expiry asks the caller to refresh it.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from dns_resolver import wire

CacheKey = tuple[str, int, int, bool]

_TTL = struct.Struct("!I")
_MAX_TTL_VALUE = 0x7FFFFFFF  # RFC 2181 8: larger TTLs are treated as 0


class CacheEntry:
    """One cached answer. `ttl` is the entry's lifetime; `ttls[i]` the TTL at `offsets[i]`."""

    __slots__ = ("body", "offsets", "ttls", "stored", "ttl", "hits", "ede", "prefetching")

    def __init__(
        self,
        body: bytes,
        offsets: tuple[int, ...],
        ttls: tuple[int, ...],
        stored: float,
        ttl: int,
        ede: bytes = b"",
    ) -> None:
        self.body = body
        self.offsets = offsets
        self.ttls = ttls
        self.stored = stored
        self.ttl = ttl
        self.hits = 0
        self.ede = ede  # an encoded EDE option to send along (blocks found by inspection)
        self.prefetching = False

    @property
    def expires(self) -> float:
        return self.stored + self.ttl


def cache_key(query: wire.Query) -> CacheKey:
    """The cache key of a query."""
    return (query.qname, query.qtype, query.qclass, query.do)


def render(
    entry: CacheEntry, query: wire.Query, age: int, *, stale_ttl: int | None = None
) -> bytes:
    """The OPT-less answer to `query` from `entry`, TTLs decremented by `age` seconds.

    With `stale_ttl`, every TTL is set to it instead (RFC 8767 4: a stale answer's TTL).
    """
    # The key is the lower-cased name, so the client's question has the same length.
    out = wire.adopt(entry.body, query)
    pack_into = _TTL.pack_into
    if stale_ttl is not None:
        for offset in entry.offsets:
            pack_into(out, offset, stale_ttl)
    else:
        for offset, ttl in zip(entry.offsets, entry.ttls, strict=True):
            pack_into(out, offset, ttl - age if ttl > age else 0)
    return bytes(out)


class Cache:
    """A bounded LRU cache of wire answers. See the module docstring for the rules."""

    def __init__(
        self,
        max_entries: int = 100_000,
        *,
        min_ttl: int = 0,
        max_ttl: int = 86_400,
        negative_max_ttl: int = 3_600,
        serve_stale: bool = False,
        stale_answer_ttl: int = 30,
        stale_max_age: int = 86_400,
        prefetch: bool = False,
        prefetch_threshold: float = 0.1,
        prefetch_min_hits: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_max_ttl = negative_max_ttl
        self.serve_stale = serve_stale
        self.stale_answer_ttl = stale_answer_ttl
        self.stale_max_age = stale_max_age
        self.prefetch = prefetch
        self.prefetch_threshold = prefetch_threshold
        self.prefetch_min_hits = prefetch_min_hits
        self.clock = clock
        self.on_evict = on_evict
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        # A second cache kept in step (the C fast path's, `fastpath.UdpFastPath`): told of
        # every store, discard and clear. It applies its own expiry and LRU bound.
        self.mirror: Any = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (after a list reload, answers were inspected with old lists)."""
        self._entries.clear()
        if self.mirror is not None:
            self.mirror.clear()

    def discard(self, key: CacheKey) -> None:
        """Forget one entry (if present)."""
        self._entries.pop(key, None)
        if self.mirror is not None:
            self.mirror.discard(key)

    def get(self, key: CacheKey) -> tuple[CacheEntry, int] | None:
        """A fresh entry and its age in whole seconds, or None (a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._from_mirror(key)
            if entry is None:
                self.misses += 1
                return None
        age = self.clock() - entry.stored
        if age >= entry.ttl:
            if not self.serve_stale or age - entry.ttl > self.stale_max_age:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        entry.hits += 1
        self.hits += 1
        return entry, int(age)

    def get_stale(self, key: CacheKey) -> CacheEntry | None:
        """An expired entry still inside the serve-stale window, when serve-stale is on."""
        if not self.serve_stale:
            return None
        entry = self._entries.get(key)
        if entry is None:
            entry = self._from_mirror(key)
            if entry is None:
                return None
        if self.clock() - entry.expires > self.stale_max_age:
            del self._entries[key]
            return None
        return entry

    def _from_mirror(self, key: CacheKey) -> CacheEntry | None:
        """An answer the mirror cached by itself (the C fast path forwards misses and
        caches their answers without telling Python), adopted into this cache."""
        if self.mirror is None:
            return None
        entry: CacheEntry | None = self.mirror.fetch(key)
        if entry is not None:
            self._entries[key] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def wants_prefetch(self, entry: CacheEntry, age: int) -> bool:
        """True once per entry when a popular entry is close to expiry."""
        if not self.prefetch or entry.prefetching or entry.hits < self.prefetch_min_hits:
            return False
        if entry.ttl - age > entry.ttl * self.prefetch_threshold:
            return False
        entry.prefetching = True
        return True

    def store(
        self,
        key: CacheKey,
        body: bytes,
        records: list[wire.RR] | None = None,
        *,
        ede: bytes = b"",
    ) -> CacheEntry | None:
        """Cache an OPT-less answer; returns the entry, or None when it is not cacheable."""
        if self.max_entries <= 0 or len(body) < 12:
            return None
        flags = (body[2] << 8) | body[3]
        rcode = flags & 0xF
        if flags & wire.TC or rcode not in (wire.NOERROR, wire.NXDOMAIN):
            return None
        if records is None:
            records = wire.walk_records(body)
        if any(r.rtype == wire.TYPE_OPT for r in records):
            raise ValueError("cache.store takes answers without an OPT record")
        answers = [r for r in records if r.section == 1]
        negative = rcode == wire.NXDOMAIN or not answers
        out = bytearray(body)
        out[0:2] = b"\x00\x00"
        # We answer from a cache, never authoritatively.
        out[2] &= ~(wire.AA >> 8) & 0xFF
        ttls: list[int] = []
        if negative:
            soa = next(
                (r for r in records if r.section == 2 and r.rtype == wire.TYPE_SOA), None
            )
            if soa is None:
                return None  # RFC 2308 5: no SOA, no negative caching
            minimum = _TTL.unpack_from(body, soa.end - 4)[0]
            lifetime = min(_clean(soa.ttl), minimum, self.negative_max_ttl)
            for r in records:
                ttls.append(min(_clean(r.ttl), lifetime))
        else:
            for r in records:
                ttls.append(min(max(_clean(r.ttl), self.min_ttl), self.max_ttl))
            lifetime = min(ttls[i] for i, r in enumerate(records) if r.section == 1)
        if lifetime <= 0:
            return None
        offsets = tuple(r.ttl_offset for r in records)
        for offset, ttl in zip(offsets, ttls, strict=True):
            _TTL.pack_into(out, offset, ttl)
        entry = CacheEntry(bytes(out), offsets, tuple(ttls), self.clock(), lifetime, ede)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if self.mirror is not None:
            self.mirror.store(key, entry)
        evicted = 0
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            evicted += 1
        if evicted:
            self.evictions += evicted
            if self.on_evict is not None:
                self.on_evict(evicted)
        return entry


def _clean(ttl: int) -> int:
    return 0 if ttl > _MAX_TTL_VALUE else ttl

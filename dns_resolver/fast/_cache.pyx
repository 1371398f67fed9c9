# cython: language_level=3
"""The fast path's answer cache: ready wire answers by question, with an LRU bound.

A C hash table (SipHash with a per-process key, grown with its entries so a small working
set stays in the CPU cache) with an LRU list bounded by `max_entries`. It mirrors the
Python `Cache` (cache.py tells it what it stores) and holds what C forwarded and cached.
Lookups and the answer patching are inline in _cache.pxd for the UDP and stream loops.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

import os

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil


cdef class AnswerCache:
    """Cached answers keyed by `fastpath.wire_key` (plus policy and mask under policies).

    Args:
        max_entries: the bound (LRU beyond it), as `cache.max_entries`.
        prefetch, prefetch_threshold, prefetch_min_hits: the cache's prefetch settings; an
            entry due for prefetch is handed to Python, which refreshes it.
    """

    def __cinit__(self, uint64_t max_entries=100000, bint prefetch=False,
                  double prefetch_threshold=0.1, uint32_t prefetch_min_hits=3):
        cdef bytes secret = os.urandom(16)
        self.k0 = int.from_bytes(secret[:8], "little")
        self.k1 = int.from_bytes(secret[8:], "little")
        self.max_entries = max_entries
        # Grown with the entries (load factor <= 1): a table sized for max_entries up front
        # would spread a small working set over megabytes and cost a cache miss per probe.
        self.nbuckets = 1024
        self.buckets = <Entry **>calloc(self.nbuckets, sizeof(Entry *))
        if self.buckets == NULL:
            raise MemoryError()
        self.prefetch = prefetch
        self.prefetch_threshold = prefetch_threshold
        self.prefetch_min_hits = prefetch_min_hits

    def __dealloc__(self):
        if self.buckets != NULL:
            self.clear()
            free(self.buckets)

    def configure(self, uint64_t max_entries, bint prefetch, double prefetch_threshold,
                  uint32_t prefetch_min_hits):
        """New settings (a config reload), as in the constructor; the cache is emptied, so
        no entry outlives the settings it was stored under."""
        self.clear()
        self.max_entries = max_entries
        self.prefetch = prefetch
        self.prefetch_threshold = prefetch_threshold
        self.prefetch_min_hits = prefetch_min_hits

    cdef void drop(self, Entry *e) noexcept nogil:
        cdef Entry **p = &self.buckets[e.hash & (self.nbuckets - 1)]
        while p[0] != e:
            p = &p[0].chain
        p[0] = e.chain
        cache_unlink(self, e)
        self.entries -= 1
        free(e)

    def store(self, bytes key, bytes body, tuple offsets, tuple ttls, double stored,
              uint32_t lifetime, bytes ede):
        """Cache `body` (an OPT-less answer, ID zeroed) under `key` (lower-cased question
        name in wire form + type + class + DO byte, see `fastpath.wire_key`)."""
        cdef uint32_t keylen = len(key), bodylen = len(body), nttl = len(offsets), i
        cdef uint16_t offs[MAX_RECORDS]
        cdef uint32_t vals[MAX_RECORDS]
        if self.max_entries == 0 or keylen > MAX_KEY or len(ttls) != nttl:
            return
        if nttl > MAX_RECORDS:
            self.discard(key)  # never serve an older answer than Python's
            return
        for i in range(nttl):
            if offsets[i] + 4 > bodylen:
                raise ValueError("TTL offset outside the answer")
            offs[i] = offsets[i]
            vals[i] = ttls[i]
        if self.store_raw(
                <const uint8_t *>PyBytes_AS_STRING(key), keylen, self.key_hash(key),
                <const uint8_t *>PyBytes_AS_STRING(body), bodylen, offs, vals, nttl, stored,
                lifetime, <const uint8_t *>PyBytes_AS_STRING(ede), len(ede)) == NULL:
            raise MemoryError()

    cdef Entry *store_raw(self, const uint8_t *key, uint32_t keylen, uint64_t h,
                          const uint8_t *body, uint32_t bodylen, const uint16_t *offsets,
                          const uint32_t *ttls, uint32_t nttl, double stored,
                          uint32_t lifetime, const uint8_t *ede, uint32_t edelen) noexcept nogil:
        cdef Entry *e = cache_find(self, key, keylen, h)
        cdef uint8_t *p
        if e != NULL:
            self.drop(e)
        e = <Entry *>malloc(sizeof(Entry) + nttl * 6 + keylen + bodylen + edelen)
        if e == NULL:
            return NULL
        p = <uint8_t *>(e + 1)
        e.ttls = <uint32_t *>p
        p += nttl * 4
        e.offsets = <uint16_t *>p
        p += nttl * 2
        e.key = p
        p += keylen
        e.body = p
        p += bodylen
        e.ede = p
        memcpy(e.key, key, keylen)
        memcpy(e.body, body, bodylen)
        memcpy(e.ede, ede, edelen)
        memcpy(e.ttls, ttls, nttl * 4)
        memcpy(e.offsets, offsets, nttl * 2)
        e.hash = h
        e.keylen = keylen
        e.bodylen = bodylen
        e.edelen = edelen
        e.nttl = nttl
        e.stored = stored
        e.lifetime = lifetime
        e.hits = 0
        e.watch = self.watch
        e.chain = self.buckets[h & (self.nbuckets - 1)]
        self.buckets[h & (self.nbuckets - 1)] = e
        e.newer = NULL
        e.older = self.lru_head
        if self.lru_head != NULL:
            self.lru_head.newer = e
        self.lru_head = e
        if self.lru_tail == NULL:
            self.lru_tail = e
        self.entries += 1
        while self.entries > self.max_entries:
            self.drop(self.lru_tail)
        if self.entries > self.nbuckets and self.nbuckets < (1 << 27):
            self.grow()
        return e

    cdef int grow(self) noexcept nogil:
        """Double the bucket array and rehash (walks the LRU list: every entry once)."""
        cdef uint64_t n = self.nbuckets * 2
        cdef Entry **b = <Entry **>calloc(n, sizeof(Entry *))
        cdef Entry *e = self.lru_head
        if b == NULL:
            return 0  # keep the longer chains rather than fail a store
        while e != NULL:
            e.chain = b[e.hash & (n - 1)]
            b[e.hash & (n - 1)] = e
            e = e.older
        free(self.buckets)
        self.buckets = b
        self.nbuckets = n
        return 0

    def fetch(self, bytes key):
        """The entry cached under `key` as (body, offsets, ttls, stored, lifetime, ede), or
        None: for Python's cache, which does not hold what C forwarded and cached."""
        cdef Entry *e = self.lookup(key)
        cdef uint32_t i
        if e == NULL:
            return None
        return (PyBytes_FromStringAndSize(<char *>e.body, e.bodylen),
                tuple([e.offsets[i] for i in range(e.nttl)]),
                tuple([e.ttls[i] for i in range(e.nttl)]),
                e.stored, e.lifetime, PyBytes_FromStringAndSize(<char *>e.ede, e.edelen))

    def discard(self, bytes key):
        """Forget one entry, if cached."""
        cdef Entry *e = self.lookup(key)
        if e != NULL:
            self.drop(e)

    cdef uint64_t key_hash(self, bytes key):
        return fc_siphash24(self.k0, self.k1, <const unsigned char *>PyBytes_AS_STRING(key),
                            len(key))

    cdef Entry *lookup(self, bytes key):
        """The entry cached under a key made by Python (`fastpath.wire_key`), or NULL."""
        return cache_find(self, <const uint8_t *>PyBytes_AS_STRING(key), len(key),
                          self.key_hash(key))

    def clear(self):
        """Drop every cached answer."""
        cdef Entry *e = self.lru_head
        cdef Entry *nxt
        while e != NULL:
            nxt = e.older
            free(e)
            e = nxt
        memset(self.buckets, 0, self.nbuckets * sizeof(Entry *))
        self.lru_head = NULL
        self.lru_tail = NULL
        self.entries = 0

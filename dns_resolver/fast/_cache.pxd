# What C sees of the answer cache (dns_resolver/fast/_cache.pyx). The lookup, the LRU touch
# and the answer patching run once per cache hit: they are inline here.
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from dns_resolver.fast._wire cimport AA, CD, RA, RD, TC, add_opt, put16, put32, u16


cdef enum:
    MAX_KEY = 272          # cache key: wire name (255) + type, class, DO + policy, mask
    MAX_RECORDS = 256      # records in an answer C caches or handles (more: Python)


cdef struct Entry:
    # One cached answer: the body without OPT (ID zeroed, AA clear) and its TTL fields.
    Entry *chain           # next in the hash bucket
    Entry *newer           # LRU neighbours (head = most recently used)
    Entry *older
    uint64_t hash
    double stored          # CLOCK_MONOTONIC seconds, the same clock as time.monotonic()
    uint32_t lifetime
    uint32_t hits
    uint32_t watch         # hits still to record for newly observed domains (set_observe)
    uint32_t keylen
    uint32_t bodylen
    uint32_t edelen
    uint32_t nttl
    uint8_t *key
    uint8_t *body
    uint8_t *ede
    uint16_t *offsets
    uint32_t *ttls


@cython.final
cdef class AnswerCache:
    cdef uint64_t k0, k1   # the SipHash key of the keys (per process)
    cdef Entry **buckets
    cdef uint64_t nbuckets
    cdef Entry *lru_head
    cdef Entry *lru_tail
    cdef readonly uint64_t entries
    cdef readonly uint64_t max_entries
    cdef bint prefetch
    cdef double prefetch_threshold
    cdef uint32_t prefetch_min_hits
    cdef uint32_t watch    # a new entry's first hits recorded as observed (0: none)

    cdef Entry *store_raw(self, const uint8_t *key, uint32_t keylen, uint64_t h,
                          const uint8_t *body, uint32_t bodylen, const uint16_t *offsets,
                          const uint32_t *ttls, uint32_t nttl, double stored,
                          uint32_t lifetime, const uint8_t *ede, uint32_t edelen) noexcept nogil
    cdef void drop(self, Entry *e) noexcept nogil
    cdef int grow(self) noexcept nogil
    cdef uint64_t key_hash(self, bytes key)
    cdef Entry *lookup(self, bytes key)


cdef inline Entry *cache_find(AnswerCache c, const uint8_t *key, uint32_t keylen,
                              uint64_t h) noexcept nogil:
    cdef Entry *e = c.buckets[h & (c.nbuckets - 1)]
    while e != NULL:
        if e.hash == h and e.keylen == keylen and memcmp(e.key, key, keylen) == 0:
            return e
        e = e.chain
    return NULL


cdef inline void cache_unlink(AnswerCache c, Entry *e) noexcept nogil:
    if e.newer != NULL:
        e.newer.older = e.older
    else:
        c.lru_head = e.older
    if e.older != NULL:
        e.older.newer = e.newer
    else:
        c.lru_tail = e.newer
    e.newer = NULL
    e.older = NULL


cdef inline void cache_touch(AnswerCache c, Entry *e) noexcept nogil:
    """Make `e` the most recently used entry."""
    if e != c.lru_head:
        cache_unlink(c, e)
        e.older = c.lru_head
        c.lru_head.newer = e
        c.lru_head = e


cdef inline uint32_t fill(const uint8_t *body, uint32_t blen, const uint16_t *offsets,
                          const uint32_t *ttls, uint32_t nttl, uint32_t age, const uint8_t *q,
                          uint32_t qend, uint16_t qflags, bint edns, bint do, uint32_t limit,
                          int udp_size, const uint8_t *ede, uint32_t edelen,
                          uint8_t *out) noexcept nogil:
    """The answer to query `q` from an OPT-less `body`: the client's ID, RD/CD and
    question bytes (letter case kept), TTLs minus `age`, our OPT; too big for `limit`,
    the header, question and OPT with TC. `wire.adopt` + `edns.finish` in C."""
    cdef uint32_t total, i, ttl
    cdef uint32_t optlen = 11 + edelen if edns else 0
    cdef uint16_t flags = (u16(body + 2) & ~(RD | CD | AA)) | (qflags & (RD | CD)) | RA
    if blen + optlen <= limit:
        memcpy(out, body, blen)
        for i in range(nttl):
            ttl = ttls[i]
            put32(out + offsets[i], ttl - age if ttl > age else 0)
        total = blen
        if edns:
            put16(out + 10, u16(out + 10) + 1)
    else:
        flags |= TC
        memset(out + 4, 0, 8)
        out[5] = 1
        if edns:
            out[11] = 1
        total = qend
    out[0] = q[0]
    out[1] = q[1]
    put16(out + 2, flags)
    memcpy(out + 12, q + 12, qend - 12)  # the client's letter case (0x20)
    return add_opt(out, total, edns, do, udp_size, ede, edelen)

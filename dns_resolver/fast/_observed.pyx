# cython: language_level=3
"""Newly observed domains in C (docs/leads.md): every cache miss's registrable domain by the
Public Suffix List, looked up in two rotating Bloom filters, so that only the domains in
neither (and a candidate's next queries, for its client networks) reach Python as records.

The PSL is a hash set of the rules' strings, hashed from the right so one pass over a name
gives the hash of each of its suffixes; a wildcard rule (`*.ck`) and an exception rule
(`!www.ck`) are flags on the string they hang from (`ck`, `www.ck`)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport exp, log
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

import math
import secrets
import time

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil


cdef enum:
    RULE = 1               # the string is a rule
    WILDCARD = 2           # "*." + the string is a rule
    EXCEPTION = 4          # "!" + the string is a rule
    MAX_LABELS = 128
    KNOWN_SLOTS = 1 << 14  # 128 KiB of hashes: stays in the CPU cache


cdef struct Rule:
    uint64_t h
    uint32_t off
    uint16_t len
    uint8_t flags


cdef Rule *_rules = NULL
cdef uint64_t _rules_mask = 0
cdef char *_blob = NULL


cdef inline uint64_t _fnv_step(uint64_t h, uint8_t c) noexcept nogil:
    return (h ^ c) * 1099511628211ULL


cdef inline uint64_t _suffix_hash(const uint8_t *s, size_t n) noexcept nogil:
    """FNV-1a over the bytes from the last to the first (as `psl_registrable` walks)."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef size_t i = n
    while i > 0:
        i -= 1
        h = _fnv_step(h, s[i])
    return h


cdef inline int _flags(const uint8_t *s, size_t n, uint64_t h) noexcept nogil:
    cdef uint64_t i = h & _rules_mask
    cdef Rule *r
    while True:
        r = &_rules[i]
        if r.len == 0:
            return 0
        if r.h == h and r.len == n and memcmp(_blob + r.off, s, n) == 0:
            return r.flags
        i = (i + 1) & _rules_mask


def set_rules(rules):
    """Build the PSL set from `rules` as the list writes them (`co.uk`, `*.ck`, `!www.ck`)."""
    global _rules, _rules_mask, _blob
    cdef dict flags = {}
    cdef bytes key, blob
    cdef uint64_t size = 16, h, i
    cdef uint32_t off = 0
    for rule in rules:
        if rule.startswith("!"):
            key, bit = rule[1:].encode(), EXCEPTION
        elif rule.startswith("*."):
            key, bit = rule[2:].encode(), WILDCARD
        else:
            key, bit = rule.encode(), RULE
        if 0 < len(key) < 65536:
            flags[key] = flags.get(key, 0) | bit
    while size < 2 * len(flags):
        size <<= 1
    blob = b"".join(flags)
    table = <Rule *>calloc(size, sizeof(Rule))
    text = <char *>malloc(len(blob) or 1)
    if table == NULL or text == NULL:
        free(table)
        free(text)
        raise MemoryError()
    memcpy(text, PyBytes_AS_STRING(blob), len(blob))
    for key, bit in flags.items():
        h = _suffix_hash(<const uint8_t *>PyBytes_AS_STRING(key), len(key))
        i = h & (size - 1)
        while table[i].len:
            i = (i + 1) & (size - 1)
        table[i].h = h
        table[i].off = off
        table[i].len = len(key)
        table[i].flags = bit
        off += len(key)
    free(_rules)
    free(_blob)
    _rules, _rules_mask, _blob = table, size - 1, text


cdef int psl_registrable(const uint8_t *name, uint32_t n) noexcept nogil:
    """Where the registrable domain of the lower-case dotted `name` starts, or -1 (a public
    suffix itself, an IPv4 literal, no known suffix): the longest matching rule wins and an
    exception beats the wildcard of its length, as the PSL's algorithm says."""
    cdef uint32_t starts[MAX_LABELS]
    cdef uint64_t hashes[MAX_LABELS]
    cdef uint64_t h = 14695981039346656037ULL
    cdef int nl = 0, i, r, f, suffix
    cdef uint32_t p = n
    cdef bint digits = True
    if n == 0 or _rules == NULL:
        return -1
    # Label starts and suffix hashes, right to left (index 0: the last label).
    while p > 0:
        p -= 1
        h = _fnv_step(h, name[p])
        if nl == 0 and not (48 <= name[p] <= 57 or name[p] == 46):
            digits = False
        if p == 0 or name[p - 1] == 46:  # "."
            if nl == 0 and digits:
                return -1  # an IPv4 literal
            if nl == MAX_LABELS:
                return -1
            starts[nl] = p
            hashes[nl] = h
            nl += 1
    for i in range(nl):  # the longest suffix first
        r = nl - 1 - i
        f = _flags(name + starts[r], n - starts[r], hashes[r])
        if f & EXCEPTION:
            suffix = i + 1
        elif f & RULE or (r > 0 and _flags(name + starts[r - 1], n - starts[r - 1],
                                            hashes[r - 1]) & WILDCARD):
            suffix = i
        else:
            continue
        if suffix == 0:
            return -1
        return starts[nl - suffix]
    return -1


def registrable_of(bytes name):
    """The registrable domain of the lower-case dotted `name` (bytes), or None."""
    cdef int off = psl_registrable(<const uint8_t *>PyBytes_AS_STRING(name), len(name))
    return None if off < 0 else name[off:]


cdef inline bint _has(const uint8_t *f, uint64_t h, uint64_t bits, int k) noexcept nogil:
    # Double hashing (Kirsch & Mitzenmacher) from one 64-bit hash: k probes for one.
    cdef uint64_t h1 = h & 0xFFFFFFFFULL, h2 = (h >> 32) | 1, p
    cdef int i
    for i in range(k):
        p = (h1 + i * h2) % bits
        if not f[p >> 3] & (1 << (p & 7)):
            return False
    return True


cdef class Observed:
    """Two rotating Bloom filters (a fixed memory, a stated false-positive rate) and what
    C records of cache misses for `dns_resolver.observability.observed.Tracker`.

    Args:
        memory: bytes of both filters together.
        false_positive_rate: what each filter is sized for at its capacity.
        window: seconds; the filters rotate every window/2 (or when one is full).
        now: the monotonic time the first filter starts (default: now).
    """

    def __init__(self, size_t memory, double false_positive_rate, double window,
                 now=None):
        if not 0 < false_positive_rate < 1:
            raise ValueError("observed: false_positive_rate must be between 0 and 1")
        self.bits = max(64, (memory // 2) * 8)
        # Capacity and hash count that give the rate with these bits (Bloom's formulas).
        self.capacity = max(1, <uint64_t>(-<double>self.bits * log(2) ** 2
                                          / log(false_positive_rate)))
        self.hashes = max(1, <int>round(<double>self.bits / self.capacity * log(2)))
        self.window = window
        self.current = <uint8_t *>calloc(self.bits // 8, 1)
        self.previous = <uint8_t *>calloc(self.bits // 8, 1)
        self.known = <uint64_t *>calloc(KNOWN_SLOTS, sizeof(uint64_t))
        if self.current == NULL or self.previous == NULL or self.known == NULL:
            raise MemoryError()
        key = secrets.token_bytes(16)
        self.k0 = int.from_bytes(key[:8], "little")
        self.k1 = int.from_bytes(key[8:], "little")
        self.rotated_at = time.monotonic() if now is None else now

    def __dealloc__(self):
        free(self.current)
        free(self.previous)
        free(self.known)
        free(self.watch)
        free(self.buf)

    def records(self, size_t capacity, uint32_t budget, double lead_window,
                size_t candidates):
        """Write records for `take`: a newly observed domain's first query, and the next
        `budget - 1` queries of each of up to about `candidates` such domains within
        `lead_window` seconds (their client networks). A full buffer drops (counted)."""
        cdef uint64_t slots = 64
        while slots < 2 * candidates:
            slots <<= 1
        free(self.watch)
        free(self.buf)
        self.watch = <Watch *>calloc(slots, sizeof(Watch))
        self.buf = <uint8_t *>malloc(capacity)
        if self.watch == NULL or self.buf == NULL:
            raise MemoryError()
        self.watch_mask = slots - 1
        self.cap = capacity
        self.len = 0
        self.budget = max(1, budget)
        self.watch_seconds = lead_window

    @property
    def nbytes(self):
        """Bytes the filters hold (constant)."""
        return 2 * (self.bits // 8)

    def predicted_false_positive_rate(self, entries=None):
        """The chance a new domain is taken for seen, with `entries` in each filter
        (default: both at capacity, the worst case)."""
        n = self.capacity if entries is None else entries
        one = (1 - math.exp(-self.hashes * n / self.bits)) ** self.hashes
        return 1 - (1 - one) ** 2

    cdef uint64_t _hash(self, const uint8_t *s, size_t n) noexcept nogil:
        cdef uint64_t h = fc_siphash24(self.k0, self.k1, <const unsigned char *>s, n)
        return h if h else 1  # 0 marks a free slot

    cdef void _rotate(self, double now) noexcept nogil:
        cdef uint8_t *t = self.previous
        self.previous = self.current
        self.current = t
        memset(self.current, 0, self.bits // 8)
        memset(self.known, 0, KNOWN_SLOTS * sizeof(uint64_t))
        self.count = 0
        self.rotations += 1
        self.rotated_at = now

    cdef int _add(self, uint64_t h, double now) noexcept nogil:
        """Remember hash `h`; 1 when it was in neither filter (newly observed)."""
        cdef uint64_t h1 = h & 0xFFFFFFFFULL, h2 = (h >> 32) | 1, p
        cdef int i, missing = 0, new
        cdef uint8_t bit
        # One pass over the current filter, setting as it goes: the bits it sets for a key
        # it already holds were set anyway.
        for i in range(self.hashes):
            p = (h1 + i * h2) % self.bits
            bit = 1 << (p & 7)
            if not self.current[p >> 3] & bit:
                missing += 1
                self.current[p >> 3] |= bit
        if not missing:
            return 0
        new = not _has(self.previous, h, self.bits, self.hashes)
        self.count += 1
        if self.count >= self.capacity or now - self.rotated_at >= self.window / 2:
            self._rotate(now)
        return new

    cdef void note(self, const uint8_t *name, uint32_t namelen, const uint8_t *network,
                   double now) noexcept nogil:
        """One cache miss of `name` (lower case, dotted) from `network` (17 bytes: the
        family, then the masked address): a record when its domain is newly observed or a
        candidate's. Most misses end at the first test (a domain asked recently)."""
        cdef int off
        cdef uint64_t h, i, end
        cdef Watch *w
        cdef Watch *free_slot = NULL
        cdef uint8_t kind
        self.noted += 1
        off = psl_registrable(name, namelen)
        if off < 0:
            return
        h = self._hash(name + off, namelen - off)
        if self.known[h & (KNOWN_SLOTS - 1)] == h:
            return
        kind = 0
        if self.watch != NULL:
            i = h & self.watch_mask
            end = i + WATCH_PROBES
            while i < end:
                w = &self.watch[i & self.watch_mask]
                if w.h == h:
                    if w.budget and now < w.until:
                        w.budget -= 1
                        kind = OBS_WATCHED
                    else:
                        w.h = 0  # spent or past its window: known from now on
                    break
                if free_slot == NULL and (w.h == 0 or not w.budget or now >= w.until):
                    free_slot = w
                i += 1
        if kind == 0:
            if not self._add(h, now):
                self.known[h & (KNOWN_SLOTS - 1)] = h
                return
            kind = OBS_NEW
            if free_slot != NULL and self.budget > 1:
                free_slot.h = h
                free_slot.until = now + self.watch_seconds
                free_slot.budget = self.budget - 1
        if self.buf == NULL:
            return
        if self.len + OBS_HEADER + namelen > self.cap:
            self.dropped += 1
            return
        memcpy(self.buf + self.len, network, 17)
        self.buf[self.len + 17] = namelen
        self.buf[self.len + 18] = off
        self.buf[self.len + 19] = kind
        memcpy(self.buf + self.len + OBS_HEADER, name, namelen)
        self.len += OBS_HEADER + namelen

    # -- from Python -------------------------------------------------------------------------

    def observe(self, bytes name, bytes network, double now):
        """`note` for a name Python saw (tests, the replay); `network` is 17 bytes."""
        if len(network) != 17 or not 0 < len(name) < 256:
            raise ValueError("observed: a 17-byte network and a name of 1-255 bytes")
        self.note(<const uint8_t *>PyBytes_AS_STRING(name), len(name),
                  <const uint8_t *>PyBytes_AS_STRING(network), now)

    def take(self):
        """The records since the last call: per record, family (1 byte: 4 or 6), network
        (16 bytes), name length, the registrable domain's offset in the name, kind (1 new,
        2 a candidate's), the lower-case dotted name."""
        cdef bytes out
        if self.len == 0:
            return b""
        out = PyBytes_FromStringAndSize(<char *>self.buf, self.len)
        self.len = 0
        return out

    def forget(self, str domain):
        """Stop sending records for candidate `domain` (examined, or dropped)."""
        cdef bytes b = domain.encode()
        cdef uint64_t h = self._hash(<const uint8_t *>PyBytes_AS_STRING(b), len(b)), i
        if self.watch == NULL:
            return
        for i in range(h, h + WATCH_PROBES):
            if self.watch[i & self.watch_mask].h == h:
                self.watch[i & self.watch_mask].h = 0

    def seen(self, str key):
        """True when `key` is in either filter (or a false positive says so)."""
        cdef bytes b = key.encode()
        cdef uint64_t h = self._hash(<const uint8_t *>PyBytes_AS_STRING(b), len(b))
        return (_has(self.current, h, self.bits, self.hashes)
                or _has(self.previous, h, self.bits, self.hashes))

    def add(self, str key, now=None):
        """Remember `key`; True when it was in neither filter (newly observed)."""
        cdef bytes b = key.encode()
        cdef uint64_t h = self._hash(<const uint8_t *>PyBytes_AS_STRING(b), len(b))
        return bool(self._add(h, time.monotonic() if now is None else now))

    def rotate(self, now=None):
        """Forget the older filter; start an empty current one."""
        self._rotate(time.monotonic() if now is None else now)

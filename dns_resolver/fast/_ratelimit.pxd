# What C sees of the per-client rate limiter (dns_resolver/fast/_ratelimit.pyx).
cimport cython
from libc.stdint cimport uint8_t, uint64_t

from dns_resolver.fast._net cimport Net, in_net


cdef enum:
    RL_PASS = 0            # under the limit (or exempt)
    RL_LIMITED = 1         # over the limit
    RL_LIMITED_LOG = 2     # over the limit, and a second since the last such: log it
    RL_DROP = 0            # actions, in the order of fdconfig.ratelimit.ACTIONS
    RL_REFUSED = 1
    RL_TRUNCATE = 2
    RL_WAYS = 4            # buckets per hash set: the least recently seen one is evicted


cdef struct Bucket:
    uint64_t hash          # keyed hash of `key`; 0: unused
    double tokens
    double last            # CLOCK_MONOTONIC seconds of the last refill
    double logged          # when the last query log line for this network was due
    uint8_t key[17]        # family (4 or 6; +16 for TCP), then the masked address


@cython.final
cdef class RateLimiter:
    cdef Bucket *table
    cdef uint64_t nsets
    cdef uint64_t k0, k1
    cdef double qps
    cdef double burst
    cdef int prefix4, prefix6
    cdef readonly int action
    cdef Net *exempt
    cdef int nexempt
    cdef uint64_t applied[3]   # limited queries by the action they got

    cdef int check(self, int family, const uint8_t *addr, double now, bint tcp) noexcept nogil
    cdef void count(self, int action) noexcept nogil

# What C sees of the UDP fast path (dns_resolver/_fastpath.pyx).
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from filtercore._table cimport MatchCore


cdef enum:
    VLEN = 64              # datagrams per recvmmsg/sendmmsg (32-64 measured best)
    RECV_SIZE = 4096       # receive buffer per datagram; longer queries are dropped
    NQTYPE = 257           # per-qtype counters: codes 0-255, then "other"
    NBUCKETS = 19          # latency histogram buckets (metrics.LATENCY_BUCKETS + Inf)
    MAX_BLOCK_KEYS = 4096  # (category, list) pairs counted in C
    MAX_POLICIES = 64
    MAX_EDE = 32768        # memoised EDE options (per rule and policy) before a reset


cdef struct Entry:
    # One cached answer: the body without OPT (ID zeroed, AA clear) and its TTL fields.
    Entry *chain           # next in the hash bucket
    Entry *newer           # LRU neighbours (head = most recently used)
    Entry *older
    uint64_t hash
    double stored          # CLOCK_MONOTONIC seconds, the same clock as time.monotonic()
    uint32_t lifetime
    uint32_t hits
    uint32_t keylen
    uint32_t bodylen
    uint32_t edelen
    uint32_t nttl
    uint8_t *key
    uint8_t *body
    uint8_t *ede
    uint16_t *offsets
    uint32_t *ttls


cdef struct Net:
    int family             # 4 or 6
    int prefix
    int value              # policy index (policies) or unused (ACL)
    uint8_t addr[16]


cdef struct Template:
    # A block answer after the question: header fields and the records.
    uint16_t rcode
    uint16_t an
    uint16_t ns
    uint32_t reclen
    uint8_t *rec


cdef struct Slot:
    # One datagram of a batch and what the fast path made of it.
    int verdict            # ANSWERED, TO_PYTHON, DROPPED
    int reason             # why it goes to Python (R_* in the .pyx)
    int64_t code           # the walk code when reason is R_NEW_BLOCK
    uint32_t outlen
    uint32_t inlen
    uint32_t namelen
    uint8_t name[128]      # the client's sockaddr (a sockaddr_storage)


@cython.final
cdef class FastPath:
    cdef MatchCore core
    cdef bint text_rules
    cdef int udp_size
    cdef uint64_t k0, k1
    # response cache
    cdef Entry **buckets
    cdef uint64_t nbuckets
    cdef Entry *lru_head
    cdef Entry *lru_tail
    cdef readonly uint64_t entries
    cdef uint64_t max_entries
    cdef bint prefetch
    cdef double prefetch_threshold
    cdef uint32_t prefetch_min_hits
    # access control and policies
    cdef Net *allow
    cdef Net *deny
    cdef int nallow, ndeny
    cdef Net *policy_nets
    cdef int npolicy_nets
    cdef int default_policy
    cdef bint policies_on
    cdef uint64_t policy_mask[MAX_POLICIES]
    cdef bint policy_python[MAX_POLICIES]
    cdef Net *trusted       # trusted forwarders: their queries go to Python
    cdef int ntrusted
    cdef uint64_t *punt     # hashes of (policy, name): names at or below go to Python
    cdef uint64_t npunt_slots
    # block answers
    cdef Template tmpl[3]  # A, AAAA, anything else
    cdef bint blocking_ready
    cdef int64_t *ede_keys
    cdef int32_t *ede_vals
    cdef uint8_t **ede_opts
    cdef uint32_t *ede_lens
    cdef uint16_t *ede_metric
    cdef int nede
    # counters, read and zeroed by take_counters()
    cdef uint64_t c_cached[NQTYPE]
    cdef uint64_t c_blocked[NQTYPE]
    cdef uint64_t c_latency[NBUCKETS]
    cdef double c_latency_sum
    cdef uint64_t c_blocks[MAX_BLOCK_KEYS]
    cdef uint64_t c_hits, c_block_misses
    cdef readonly uint64_t fast_answers, python_fallbacks, batches, datagrams
    # batch buffers
    cdef uint8_t *inbuf
    cdef uint8_t *outbuf
    cdef int outsize
    cdef Slot slots[VLEN]

    cdef Entry *_find(self, const uint8_t *key, uint32_t keylen, uint64_t h) noexcept nogil
    cdef void _unlink(self, Entry *e) noexcept nogil
    cdef void _drop(self, Entry *e) noexcept nogil
    cdef int _grow(self) except -1
    cdef int _policy_of(self, int family, const uint8_t *addr) noexcept nogil
    cdef bint _punted(self, int policy, const char *name, uint32_t n) noexcept nogil
    cdef bint _allowed(self, int family, const uint8_t *addr) noexcept nogil
    cdef int _ede_find(self, int64_t key) noexcept nogil
    cdef void _one(self, const uint8_t *d, uint32_t n, const void *sa, uint8_t *out,
                   Slot *slot, double now) noexcept nogil
    cdef int _round(self, int fd) noexcept nogil
    cdef object _handoff(self, int i)

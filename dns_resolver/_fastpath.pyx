# cython: language_level=3
"""The UDP fast path: receive a batch, answer cache hits and blocks in C, send the batch.

Per batch of up to VLEN datagrams: one recvmmsg, then for each query a parse of the header,
question and OPT straight from the wire, the ACL and policy by client address, a lookup in
a response cache keyed by the lower-cased question (name, type, class, DO) that holds the
ready wire answer, and, on a miss, the suffix walk of the list table; hits and blocks are
patched/filled in place and go out in one sendmmsg. The GIL is released for all of it.

Everything else (misses, odd queries, refusals, first block by a rule whose EDE text is
not known yet, policies that need Python) is handed back to Python untouched, which runs
the ordinary `Resolver` chain. The Python side mirrors what it caches into this cache and
registers the EDE option of each rule the first time it blocks by it, so the rules stay in
one place (cache.py, blocking.py, edns.py) and C only replays their output.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memchr, memcmp, memcpy, memset

import os

from filtercore._table cimport MatchCore, normalize_ascii


cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum: CLOCK_MONOTONIC

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)
    enum: AF_INET
    enum: AF_INET6
    enum: MSG_DONTWAIT
    enum: MSG_TRUNC

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct in6_addr:
        uint8_t s6_addr[16]
    struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    uint16_t ntohs(uint16_t)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)


# Slot verdicts and the reasons a query goes to Python (exported for tests and metrics).
cdef enum:
    ANSWERED = 0
    TO_PYTHON = 1
    DROPPED = 2

cdef enum:
    R_MISS = 0          # not cached, not blocked: the upstream is needed
    R_ODD = 1           # a query the fast path does not parse (opcode, counts, OPT, names)
    R_REFUSE = 2        # not allowed by the ACL: Python answers REFUSED
    R_NEW_BLOCK = 3     # blocked by a rule whose EDE is not memoised yet
    R_POLICY = 4        # the client's policy needs the Python chain
    R_STALE = 5         # expired or due for prefetch: Python's cache rules decide

_NOTHING = ()

REASONS = ("miss", "odd", "refuse", "new_block", "policy", "stale")

DEF QR = 0x8000
DEF AA = 0x0400
DEF TC = 0x0200
DEF RD = 0x0100
DEF RA = 0x0080
DEF CD = 0x0010
DEF TYPE_OPT = 41
DEF PLAIN_UDP = 512
DEF MAX_KEY = 272
DEF EDE_SLOTS = 65536  # open addressing, twice MAX_EDE

# metrics.LATENCY_BUCKETS, in seconds (the last bucket is +Inf).
cdef double[18] _BOUNDS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                           0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline uint16_t _u16(const uint8_t *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline void _put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline void _put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline uint64_t _punt_hash(uint64_t k0, uint64_t k1, int policy, const char *name,
                                size_t n) noexcept nogil:
    # Keyed per policy; never 0 (0 marks an empty slot).
    return (fc_siphash24(k0 ^ <uint64_t>policy, k1, <const unsigned char *>name, n)) | 1


cdef inline bint _in_net(const Net *net, int family, const uint8_t *addr) noexcept nogil:
    cdef int full, rest
    if net.family != family:
        return False
    full = net.prefix >> 3
    rest = net.prefix & 7
    if full and memcmp(net.addr, addr, full) != 0:
        return False
    if rest:
        return ((net.addr[full] ^ addr[full]) & (0xFF << (8 - rest)) & 0xFF) == 0
    return True


cdef Net *_nets(list items, int *count) except? NULL:
    """[(family, packed address, prefix, value)] -> a C array."""
    cdef Net *nets = <Net *>calloc(max(1, len(items)), sizeof(Net))
    cdef int i = 0
    cdef bytes packed
    if nets == NULL:
        raise MemoryError()
    for family, packed, prefix, value in items:
        nets[i].family = family
        nets[i].prefix = prefix
        nets[i].value = value
        memcpy(nets[i].addr, PyBytes_AS_STRING(packed), len(packed))
        i += 1
    count[0] = i
    return nets


cdef inline int _client(const void *sa, int *family, const uint8_t **addr) noexcept nogil:
    cdef const sockaddr *s = <const sockaddr *>sa
    cdef const uint8_t *a6
    if s.sa_family == AF_INET:
        family[0] = 4
        addr[0] = <const uint8_t *>&(<const sockaddr_in *>sa).sin_addr
        return 0
    if s.sa_family == AF_INET6:
        a6 = (<const sockaddr_in6 *>sa).sin6_addr.s6_addr
        # An IPv4 client on a dual-stack socket: ::ffff:a.b.c.d (the ACL does the same).
        if memcmp(a6, b"\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0:
            family[0] = 4
            addr[0] = a6 + 12
        else:
            family[0] = 6
            addr[0] = a6
        return 0
    return -1


cdef class FastPath:
    """The C side of the UDP fast path; `dns_resolver.fastpath` drives it.

    Args:
        udp_size: our EDNS UDP payload size (`server.udp_payload_size`).
        max_entries: the cache bound (LRU beyond it), as `cache.max_entries`.
        prefetch, prefetch_threshold, prefetch_min_hits: the cache's prefetch settings; an
            entry due for prefetch is handed to Python, which refreshes it.
    """

    def __cinit__(self, int udp_size=1232, uint64_t max_entries=100000, bint prefetch=False,
                  double prefetch_threshold=0.1, uint32_t prefetch_min_hits=3):
        cdef bytes secret = os.urandom(16)
        self.udp_size = max(PLAIN_UDP, min(udp_size, 65535))
        self.k0 = int.from_bytes(secret[:8], "little")
        self.k1 = int.from_bytes(secret[8:], "little")
        self.max_entries = max_entries
        # Grown with the entries (load factor <= 1): a table sized for max_entries up front
        # would spread a small working set over megabytes and cost a cache miss per probe.
        self.nbuckets = 1024
        self.buckets = <Entry **>calloc(self.nbuckets, sizeof(Entry *))
        self.prefetch = prefetch
        self.prefetch_threshold = prefetch_threshold
        self.prefetch_min_hits = prefetch_min_hits
        self.default_policy = 0
        self.policy_mask[0] = 0xFFFFFFFFFFFFFFFF
        self.policy_python[0] = False
        self.ede_keys = <int64_t *>malloc(EDE_SLOTS * sizeof(int64_t))
        self.ede_vals = <int32_t *>malloc(EDE_SLOTS * sizeof(int32_t))
        self.ede_opts = <uint8_t **>calloc(MAX_EDE, sizeof(uint8_t *))
        self.ede_lens = <uint32_t *>calloc(MAX_EDE, sizeof(uint32_t))
        self.ede_metric = <uint16_t *>calloc(MAX_EDE, sizeof(uint16_t))
        self.allow = <Net *>calloc(1, sizeof(Net))
        self.deny = <Net *>calloc(1, sizeof(Net))
        self.policy_nets = <Net *>calloc(1, sizeof(Net))
        self.trusted = <Net *>calloc(1, sizeof(Net))
        self.outsize = self.udp_size
        self.inbuf = <uint8_t *>malloc(VLEN * RECV_SIZE)
        self.outbuf = <uint8_t *>malloc(VLEN * self.outsize)
        if (self.buckets == NULL or self.ede_keys == NULL or self.ede_vals == NULL
                or self.ede_opts == NULL or self.ede_lens == NULL or self.ede_metric == NULL
                or self.inbuf == NULL or self.outbuf == NULL or self.allow == NULL
                or self.deny == NULL or self.policy_nets == NULL):
            raise MemoryError()
        memset(self.ede_keys, 0xFF, EDE_SLOTS * sizeof(int64_t))

    def __dealloc__(self):
        cdef int i
        if self.buckets != NULL:
            self.clear()
            free(self.buckets)
        if self.ede_opts != NULL:
            for i in range(self.nede):
                free(self.ede_opts[i])
        free(self.ede_keys)
        free(self.ede_vals)
        free(self.ede_opts)
        free(self.ede_lens)
        free(self.ede_metric)
        free(self.allow)
        free(self.deny)
        free(self.policy_nets)
        free(self.trusted)
        free(self.punt)
        free(self.inbuf)
        free(self.outbuf)
        for i in range(3):
            free(self.tmpl[i].rec)

    # -- configuration (from Python, between batches) ------------------------------------

    def set_matcher(self, MatchCore core, bint text_rules):
        """Walk `core` from now on (None: every cache miss goes to Python). Block EDEs
        memoised for the previous lists no longer apply, so they are forgotten."""
        self.core = core
        self.text_rules = text_rules
        self.forget_blocks()

    def set_acl(self, list allow, list deny):
        """Allowed and denied networks as [(family, packed network, prefix, 0)]."""
        free(self.allow)
        self.allow = NULL
        free(self.deny)
        self.deny = NULL
        self.allow = _nets(allow, &self.nallow)
        self.deny = _nets(deny, &self.ndeny)

    def set_policies(self, list nets, int default, list masks, list needs_python,
                     list punt_names=None, list trusted=None):
        """Client networks -> policy index ([(family, packed, prefix, index)], most specific
        first), the default index, and per index the category mask and whether all its
        queries must be decided in Python. `punt_names` [(index, normalised name)]: queries
        of that policy for the name or below it go to Python; `trusted` networks
        [(family, packed, prefix, 0)]: every query from them goes to Python."""
        cdef int i
        cdef uint64_t h, slot, nslots = 0
        cdef bytes raw
        if len(masks) > MAX_POLICIES or len(masks) != len(needs_python):
            raise ValueError(f"at most {MAX_POLICIES} policies, one mask and flag each")
        free(self.policy_nets)
        self.policy_nets = NULL
        self.policy_nets = _nets(nets, &self.npolicy_nets)
        free(self.trusted)
        self.trusted = NULL
        self.trusted = _nets(trusted or [], &self.ntrusted)
        free(self.punt)
        self.punt = NULL
        self.npunt_slots = 0
        if punt_names:
            nslots = 16
            while nslots < 2 * len(punt_names):
                nslots <<= 1
            self.punt = <uint64_t *>calloc(nslots, sizeof(uint64_t))
            if self.punt == NULL:
                raise MemoryError()
            for index, name in punt_names:
                raw = name.encode("ascii")
                h = _punt_hash(self.k0, self.k1, index, PyBytes_AS_STRING(raw), len(raw))
                slot = h & (nslots - 1)
                while self.punt[slot] != 0 and self.punt[slot] != h:
                    slot = (slot + 1) & (nslots - 1)
                self.punt[slot] = h
            self.npunt_slots = nslots
        self.default_policy = default
        self.policies_on = True
        for i in range(len(masks)):
            self.policy_mask[i] = masks[i]
            self.policy_python[i] = needs_python[i]
        self.forget_blocks()

    def set_templates(self, list templates):
        """Block answers after the question, for A, AAAA and any other type:
        [(rcode, ancount, nscount, records)]."""
        cdef int i
        cdef bytes rec
        if len(templates) != 3:
            raise ValueError("three templates: A, AAAA, other")
        for i in range(3):
            rcode, an, ns, rec = templates[i]
            free(self.tmpl[i].rec)
            self.tmpl[i].rec = <uint8_t *>malloc(max(1, len(rec)))
            if self.tmpl[i].rec == NULL:
                raise MemoryError()
            memcpy(self.tmpl[i].rec, PyBytes_AS_STRING(rec), len(rec))
            self.tmpl[i].reclen = len(rec)
            self.tmpl[i].rcode = rcode
            self.tmpl[i].an = an
            self.tmpl[i].ns = ns
        self.blocking_ready = True

    def learn_block(self, int64_t code, int policy, bytes ede, int metric):
        """Memoise the EDE option (and the blocks counter index) of a block by `code` for
        clients of `policy`, so the next block by that rule is answered in C."""
        cdef int64_t key = code | (<int64_t>policy << 56)
        cdef uint64_t i
        if metric < 0 or metric >= MAX_BLOCK_KEYS:
            return  # counted by Python only: too many (category, list) pairs
        if self._ede_find(key) >= 0:
            return
        if self.nede >= MAX_EDE:
            self.forget_blocks()
        i = (<uint64_t>key * 0x9E3779B97F4A7C15ULL) >> 48
        while self.ede_keys[i] != -1:
            i = (i + 1) & (EDE_SLOTS - 1)
        self.ede_opts[self.nede] = <uint8_t *>malloc(max(1, len(ede)))
        if self.ede_opts[self.nede] == NULL:
            raise MemoryError()
        memcpy(self.ede_opts[self.nede], PyBytes_AS_STRING(ede), len(ede))
        self.ede_lens[self.nede] = len(ede)
        self.ede_metric[self.nede] = metric
        self.ede_keys[i] = key
        self.ede_vals[i] = self.nede
        self.nede += 1

    def forget_blocks(self):
        """Forget every memoised block EDE (lists or policies changed)."""
        cdef int i
        for i in range(self.nede):
            free(self.ede_opts[i])
            self.ede_opts[i] = NULL
        self.nede = 0
        memset(self.ede_keys, 0xFF, EDE_SLOTS * sizeof(int64_t))

    cdef int _ede_find(self, int64_t key) noexcept nogil:
        cdef uint64_t i = (<uint64_t>key * 0x9E3779B97F4A7C15ULL) >> 48
        while self.ede_keys[i] != -1:
            if self.ede_keys[i] == key:
                return self.ede_vals[i]
            i = (i + 1) & (EDE_SLOTS - 1)
        return -1

    # -- the cache ------------------------------------------------------------------------

    cdef Entry *_find(self, const uint8_t *key, uint32_t keylen, uint64_t h) noexcept nogil:
        cdef Entry *e = self.buckets[h & (self.nbuckets - 1)]
        while e != NULL:
            if e.hash == h and e.keylen == keylen and memcmp(e.key, key, keylen) == 0:
                return e
            e = e.chain
        return NULL

    cdef void _unlink(self, Entry *e) noexcept nogil:
        if e.newer != NULL:
            e.newer.older = e.older
        else:
            self.lru_head = e.older
        if e.older != NULL:
            e.older.newer = e.newer
        else:
            self.lru_tail = e.newer
        e.newer = NULL
        e.older = NULL

    cdef void _drop(self, Entry *e) noexcept nogil:
        cdef Entry **p = &self.buckets[e.hash & (self.nbuckets - 1)]
        while p[0] != e:
            p = &p[0].chain
        p[0] = e.chain
        self._unlink(e)
        self.entries -= 1
        free(e)

    def store(self, bytes key, bytes body, tuple offsets, tuple ttls, double stored,
              uint32_t lifetime, bytes ede):
        """Cache `body` (an OPT-less answer, ID zeroed) under `key` (lower-cased question
        name in wire form + type + class + DO byte, see `fastpath.wire_key`)."""
        cdef uint32_t keylen = len(key), bodylen = len(body), edelen = len(ede)
        cdef uint32_t nttl = len(offsets), i
        cdef uint64_t h = fc_siphash24(self.k0, self.k1, <const unsigned char *>PyBytes_AS_STRING(key), keylen)
        cdef Entry *e
        cdef uint8_t *p
        if self.max_entries == 0 or keylen > MAX_KEY or len(ttls) != nttl:
            return
        e = self._find(<const uint8_t *>PyBytes_AS_STRING(key), keylen, h)
        if e != NULL:
            self._drop(e)
        e = <Entry *>malloc(sizeof(Entry) + nttl * 6 + keylen + bodylen + edelen)
        if e == NULL:
            raise MemoryError()
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
        memcpy(e.key, PyBytes_AS_STRING(key), keylen)
        memcpy(e.body, PyBytes_AS_STRING(body), bodylen)
        memcpy(e.ede, PyBytes_AS_STRING(ede), edelen)
        for i in range(nttl):
            if offsets[i] + 4 > bodylen:
                free(e)
                raise ValueError("TTL offset outside the answer")
            e.offsets[i] = offsets[i]
            e.ttls[i] = ttls[i]
        e.hash = h
        e.keylen = keylen
        e.bodylen = bodylen
        e.edelen = edelen
        e.nttl = nttl
        e.stored = stored
        e.lifetime = lifetime
        e.hits = 0
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
            self._drop(self.lru_tail)
        if self.entries > self.nbuckets and self.nbuckets < (1 << 27):
            self._grow()

    cdef int _grow(self) except -1:
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

    def discard(self, bytes key):
        """Forget one entry, if cached."""
        cdef uint64_t h = fc_siphash24(self.k0, self.k1, <const unsigned char *>PyBytes_AS_STRING(key), len(key))
        cdef Entry *e = self._find(<const uint8_t *>PyBytes_AS_STRING(key), len(key), h)
        if e != NULL:
            self._drop(e)

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

    # -- clients ------------------------------------------------------------------------

    cdef bint _allowed(self, int family, const uint8_t *addr) noexcept nogil:
        cdef int i
        for i in range(self.ndeny):
            if _in_net(&self.deny[i], family, addr):
                return False
        for i in range(self.nallow):
            if _in_net(&self.allow[i], family, addr):
                return True
        return False

    cdef bint _punted(self, int policy, const char *name, uint32_t n) noexcept nogil:
        """Is `name` (lower-case, dotted) at or below a punt name of `policy`?"""
        cdef uint32_t start = 0
        cdef uint64_t h, slot
        while True:
            h = _punt_hash(self.k0, self.k1, policy, name + start, n - start)
            slot = h & (self.npunt_slots - 1)
            while self.punt[slot] != 0:
                if self.punt[slot] == h:
                    return True
                slot = (slot + 1) & (self.npunt_slots - 1)
            while start < n and name[start] != 46:
                start += 1
            if start >= n:
                return False
            start += 1

    cdef int _policy_of(self, int family, const uint8_t *addr) noexcept nogil:
        cdef int i
        for i in range(self.npolicy_nets):
            if _in_net(&self.policy_nets[i], family, addr):
                return self.policy_nets[i].value
        return self.default_policy

    # -- one query ------------------------------------------------------------------------

    cdef void _one(self, const uint8_t *d, uint32_t n, const void *sa, uint8_t *out,
                   Slot *slot, double now) noexcept nogil:
        cdef uint16_t qflags, qtype, qclass, ar, flags, udp = 0, rdlen, olen
        cdef uint32_t pos, qend, i, optlen, total, limit, age, ttl, blen
        cdef uint8_t c, length
        cdef uint8_t key[MAX_KEY]
        cdef char name[256]
        cdef char norm[256]
        cdef uint32_t keylen = 0, namelen = 0
        cdef bint edns = False, do = False
        cdef int family, policy, idx, t
        cdef const uint8_t *addr
        cdef uint64_t h
        cdef Entry *e
        cdef Py_ssize_t nn
        cdef int64_t code
        cdef const uint8_t *ede = NULL
        cdef uint32_t edelen = 0
        slot.verdict = TO_PYTHON
        slot.reason = R_ODD
        if n < 12 or d[2] & 0x80:
            slot.verdict = DROPPED  # garbage or a response: Python drops these too
            return
        qflags = _u16(d + 2)
        ar = _u16(d + 10)
        if (qflags & 0x7800) or _u16(d + 4) != 1 or _u16(d + 6) or _u16(d + 8) or ar > 1:
            return
        # The question: lower-case wire name (the cache key) and dotted text (the walk).
        pos = 12
        while True:
            if pos >= n:
                return
            length = d[pos]
            if length == 0:
                break
            if length & 0xC0 or pos + 1 + length > n or keylen + 1 + length > 255:
                return
            key[keylen] = length
            keylen += 1
            if namelen:
                name[namelen] = 46
                namelen += 1
            for i in range(pos + 1, pos + 1 + length):
                c = d[i]
                # Bytes that name_text escapes (dot, backslash, non-printable): Python.
                if c < 0x21 or c > 0x7E or c == 46 or c == 92:
                    return
                if 65 <= c <= 90:
                    c += 32
                key[keylen] = c
                keylen += 1
                name[namelen] = c
                namelen += 1
            pos += 1 + length
        key[keylen] = 0
        keylen += 1
        qend = pos + 5
        if qend > n:
            return
        qtype = _u16(d + pos + 1)
        qclass = _u16(d + pos + 3)
        if ar:
            # Only an OPT record may follow: root owner, type 41, well-formed options.
            pos = qend
            if pos + 11 > n or d[pos] != 0 or _u16(d + pos + 1) != TYPE_OPT:
                return
            if d[pos + 6] != 0:
                return  # EDNS version other than 0: BADVERS from Python
            udp = _u16(d + pos + 3)
            do = (d[pos + 7] & 0x80) != 0
            rdlen = _u16(d + pos + 9)
            pos += 11
            if pos + rdlen > n:
                return
            i = pos
            while i < pos + rdlen:
                if i + 4 > pos + rdlen:
                    return
                olen = _u16(d + i + 2)
                i += 4 + olen
                if i > pos + rdlen:
                    return
            edns = True
            if udp < PLAIN_UDP:
                udp = PLAIN_UDP
        if _client(sa, &family, &addr) < 0:
            return
        if not self._allowed(family, addr):
            slot.reason = R_REFUSE
            return
        if self.ntrusted:
            for i in range(self.ntrusted):
                if _in_net(&self.trusted[i], family, addr):
                    slot.reason = R_POLICY  # client ids / ECS are mapped in Python
                    return
        policy = self._policy_of(family, addr)
        if self.policy_python[policy] or (
                self.npunt_slots and namelen and self._punted(policy, name, namelen)):
            slot.reason = R_POLICY
            return
        key[keylen] = qtype >> 8
        key[keylen + 1] = qtype & 0xFF
        key[keylen + 2] = qclass >> 8
        key[keylen + 3] = qclass & 0xFF
        key[keylen + 4] = do
        keylen += 5
        if self.policies_on:
            # Under policies the key also holds the policy and its mask (policy.py).
            key[keylen] = policy
            for i in range(8):
                key[keylen + 1 + i] = (self.policy_mask[policy] >> (56 - 8 * i)) & 0xFF
            keylen += 9
        limit = (udp if udp < self.udp_size else self.udp_size) if edns else PLAIN_UDP
        t = qtype if qtype < 256 else 256
        h = fc_siphash24(self.k0, self.k1, key, keylen)
        e = self._find(key, keylen, h)
        if e != NULL:
            age = <uint32_t>(now - e.stored) if now > e.stored else 0
            if now - e.stored >= e.lifetime:
                slot.reason = R_STALE
                return
            if (self.prefetch and e.hits + 1 >= self.prefetch_min_hits
                    and e.lifetime - age <= e.lifetime * self.prefetch_threshold):
                slot.reason = R_STALE
                return
            e.hits += 1
            if e != self.lru_head:
                self._unlink(e)
                e.older = self.lru_head
                self.lru_head.newer = e
                self.lru_head = e
            blen = e.bodylen
            optlen = 11 + e.edelen if edns else 0
            flags = (_u16(e.body + 2) & ~(RD | CD | AA)) | (qflags & (RD | CD)) | RA
            if blen + optlen <= limit:
                memcpy(out, e.body, blen)
                for i in range(e.nttl):
                    ttl = e.ttls[i]
                    _put32(out + e.offsets[i], ttl - age if ttl > age else 0)
                total = blen
                if edns:
                    _put16(out + 10, _u16(out + 10) + 1)
            else:
                # Too big for the client: header, question and OPT with TC (edns.finish).
                flags |= TC
                memset(out + 4, 0, 8)
                out[5] = 1
                if edns:
                    out[11] = 1
                total = qend
            out[0] = d[0]
            out[1] = d[1]
            _put16(out + 2, flags)
            memcpy(out + 12, d + 12, qend - 12)  # the client's letter case (0x20)
            ede = e.ede
            edelen = e.edelen
            self.c_cached[t] += 1
            self.c_hits += 1
        else:
            if self.core is None or not self.blocking_ready or namelen == 0:
                slot.reason = R_MISS
                return
            c = <uint8_t>name[namelen - 1]
            if (48 <= c <= 57) or c == 93 or memchr(name, 58, namelen) != NULL:
                slot.reason = R_MISS  # IP literals take Matcher.check's Python path
                return
            nn = normalize_ascii(name, namelen, norm)
            if nn < 0:
                slot.reason = R_MISS
                return
            code = self.core.walk_buf(norm, nn, self.policy_mask[policy])
            if code < 0 or code & 1:
                slot.reason = R_MISS  # allowed or unlisted (text rules run in Python)
                return
            idx = self._ede_find(code | (<int64_t>policy << 56))
            if idx < 0:
                slot.reason = R_NEW_BLOCK
                slot.code = code
                return
            i = 0 if qtype == 1 else (1 if qtype == 28 else 2)
            if qclass != 1:
                i = 2
            ede = self.ede_opts[idx]
            edelen = self.ede_lens[idx]
            optlen = 11 + edelen if edns else 0
            flags = QR | RA | (qflags & (0x7800 | RD | CD)) | self.tmpl[i].rcode
            blen = qend + self.tmpl[i].reclen
            out[0] = d[0]
            out[1] = d[1]
            _put16(out + 2, flags)
            _put16(out + 4, 1)
            if blen + optlen <= limit:
                _put16(out + 6, self.tmpl[i].an)
                _put16(out + 8, self.tmpl[i].ns)
                _put16(out + 10, 1 if edns else 0)
                memcpy(out + 12, d + 12, qend - 12)
                memcpy(out + qend, self.tmpl[i].rec, self.tmpl[i].reclen)
                total = blen
            else:
                _put16(out + 2, flags | TC)
                memset(out + 6, 0, 6)
                out[11] = 1 if edns else 0
                memcpy(out + 12, d + 12, qend - 12)
                total = qend
            self.c_blocked[t] += 1
            if self.max_entries:
                self.c_block_misses += 1  # Python's handle counts the cache lookup too
            self.c_blocks[self.ede_metric[idx]] += 1
        if edns:
            out[total] = 0
            _put16(out + total + 1, TYPE_OPT)
            _put16(out + total + 3, self.udp_size)
            out[total + 5] = 0
            out[total + 6] = 0
            _put16(out + total + 7, 0x8000 if do else 0)
            _put16(out + total + 9, edelen)
            memcpy(out + total + 11, ede, edelen)
            total += 11 + edelen
        slot.verdict = ANSWERED
        slot.outlen = total

    # -- batches --------------------------------------------------------------------------

    cdef int _round(self, int fd) noexcept nogil:
        """One recvmmsg + answers + sendmmsg. Returns the datagrams read, -1 when none."""
        cdef mmsghdr msgs[VLEN]
        cdef iovec iovs[VLEN]
        cdef mmsghdr outm[VLEN]
        cdef iovec outv[VLEN]
        cdef int i, n, k = 0, sent, r
        cdef double now, done, lat
        for i in range(VLEN):
            iovs[i].iov_base = self.inbuf + i * RECV_SIZE
            iovs[i].iov_len = RECV_SIZE
            memset(&msgs[i].msg_hdr, 0, sizeof(msghdr))
            msgs[i].msg_hdr.msg_name = self.slots[i].name
            msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            msgs[i].msg_hdr.msg_iov = &iovs[i]
            msgs[i].msg_hdr.msg_iovlen = 1
        n = recvmmsg(fd, msgs, VLEN, MSG_DONTWAIT, NULL)
        if n <= 0:
            return -1
        now = _now()
        self.batches += 1
        self.datagrams += n
        for i in range(n):
            self.slots[i].inlen = msgs[i].msg_len
            self.slots[i].namelen = msgs[i].msg_hdr.msg_namelen
            if msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.slots[i].verdict = DROPPED  # longer than any sane query
                continue
            self._one(self.inbuf + i * RECV_SIZE, msgs[i].msg_len, self.slots[i].name,
                      self.outbuf + i * self.outsize, &self.slots[i], now)
            if self.slots[i].verdict == ANSWERED:
                outv[k].iov_base = self.outbuf + i * self.outsize
                outv[k].iov_len = self.slots[i].outlen
                memset(&outm[k].msg_hdr, 0, sizeof(msghdr))
                outm[k].msg_hdr.msg_name = self.slots[i].name
                outm[k].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen
                outm[k].msg_hdr.msg_iov = &outv[k]
                outm[k].msg_hdr.msg_iovlen = 1
                k += 1
            elif self.slots[i].verdict == TO_PYTHON:
                self.python_fallbacks += 1
        sent = 0
        while sent < k:
            r = sendmmsg(fd, outm + sent, k - sent, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                # A full send buffer (or a client gone): the client retries, as with any
                # lost UDP answer; the rest of the batch is dropped, not queued.
                break
            sent += r
        self.fast_answers += k
        if k:
            done = _now()
            lat = done - now
            i = 0
            while i < 18 and lat > _BOUNDS[i]:
                i += 1
            self.c_latency[i] += k
            self.c_latency_sum += lat * k
        return n

    def serve(self, int fd, int rounds=8):
        """Drain up to `rounds` batches from the non-blocking UDP socket `fd`.

        Answers what it can and returns the rest as [(datagram, host, port, reason, code)]
        for the Python chain (`reason` indexes REASONS; `code` is the walk code of a
        R_NEW_BLOCK). Returns early once the socket is empty.
        """
        cdef list rest = None  # made only when needed: an allocation per wake feeds the GC
        cdef int r, i, n
        for r in range(rounds):
            with nogil:
                n = self._round(fd)
            if n <= 0:
                break
            for i in range(n):
                if self.slots[i].verdict == TO_PYTHON:
                    if rest is None:
                        rest = []
                    rest.append(self._handoff(i))
            if n < VLEN:
                break
        return rest if rest is not None else _NOTHING

    cdef object _handoff(self, int i):
        cdef Slot *s = &self.slots[i]
        cdef char host[64]
        cdef const sockaddr *sa = <const sockaddr *>s.name
        cdef int port
        if sa.sa_family == AF_INET6:
            inet_ntop(AF_INET6, &(<const sockaddr_in6 *>sa).sin6_addr, host, 64)
            port = ntohs((<const sockaddr_in6 *>sa).sin6_port)
        else:
            inet_ntop(AF_INET, &(<const sockaddr_in *>sa).sin_addr, host, 64)
            port = ntohs((<const sockaddr_in *>sa).sin_port)
        return (PyBytes_FromStringAndSize(<char *>self.inbuf + i * RECV_SIZE, s.inlen),
                host.decode("ascii"), port, s.reason, s.code)

    def counters(self, bint reset=True):
        """The per-query counters since the last call, for the metrics flush:
        {"cached": {qtype: n}, "blocked": {qtype: n}, "blocks": {metric index: n},
        "latency": [n per bucket], "latency_sum": s, "cache_hits": n, "cache_misses": n}.
        qtype 65535 stands for every code above 255 (metrics label it "other")."""
        cdef int i
        out = {
            "cached": {(i if i < 256 else 65535): self.c_cached[i]
                       for i in range(NQTYPE) if self.c_cached[i]},
            "blocked": {(i if i < 256 else 65535): self.c_blocked[i]
                        for i in range(NQTYPE) if self.c_blocked[i]},
            "blocks": {i: self.c_blocks[i] for i in range(MAX_BLOCK_KEYS) if self.c_blocks[i]},
            "latency": [self.c_latency[i] for i in range(NBUCKETS)],
            "latency_sum": self.c_latency_sum,
            "cache_hits": self.c_hits,
            "cache_misses": self.c_block_misses,
        }
        if reset:
            memset(self.c_cached, 0, sizeof(self.c_cached))
            memset(self.c_blocked, 0, sizeof(self.c_blocked))
            memset(self.c_blocks, 0, sizeof(self.c_blocks))
            memset(self.c_latency, 0, sizeof(self.c_latency))
            self.c_latency_sum = 0
            self.c_hits = 0
            self.c_block_misses = 0
        return out

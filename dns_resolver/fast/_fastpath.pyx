# cython: language_level=3
"""The UDP fast path: receive a batch, answer cache hits and blocks in C, send the batch.

Per batch of up to VLEN datagrams: one recvmmsg, then for each query a parse of the header,
question and OPT straight from the wire, the ACL and policy by client address, a lookup in
a response cache keyed by the lower-cased question (name, type, class, DO) that holds the
ready wire answer, and, on a miss, the suffix walk of the list table; hits and blocks are
patched/filled in place and go out in one sendmmsg. The GIL is released for all of it.

With forwarding on (`set_upstream`), a miss that needs nothing but the upstream is sent
from C too, on a pool of connected upstream sockets that Python opens and rotates (random
source ports), with a random ID; the answer is matched (ID, question), inspected (CNAME
targets and addresses against the lists), cached and sent back in C. An answer C cannot
finish (a block found by inspection, TC, an error rcode, anything it does not parse) and a
timeout go back to Python, which runs its own chain with failover and TCP.

Everything else (odd queries, refusals, first block by a rule whose EDE text is not known
yet, policies that need Python) is handed back to Python untouched, which runs the
ordinary `Resolver` chain. The Python side mirrors what it caches into this cache and
registers the EDE option of each rule the first time it blocks by it, so the rules stay in
one place (cache.py, blocking.py, edns.py) and C only replays their output.

The answer cache, the block answers, query log lines and dnstap frames live in their own
modules (_cache, _blocks, _querylog, _tapbuf; the wire helpers in _wire.pxd): see the map
in docs/resolver-fastpath.md.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.errno cimport ECONNREFUSED, EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.stdio cimport snprintf
from libc.string cimport memcmp, memcpy, memset, strlen

import ipaddress
import os

from dns_resolver.fast._blocks cimport MAX_BLOCK_KEYS, BlockAnswers, ede_find
from dns_resolver.fast._cache cimport AnswerCache, Entry, cache_find, cache_touch, fill
from dns_resolver.fast._clientids cimport ClientIds
from dns_resolver.fast._querylog cimport (L_ALLOWED, L_BLOCKED, L_CACHED, L_LIMITED, L_QUIET,
                                         LogBuffer)
from dns_resolver.fast._ratelimit cimport (RL_DROP, RL_LIMITED_LOG, RL_PASS, RL_REFUSED,
                                      RL_TRUNCATE, RateLimiter)
from dns_resolver.fast._subtable cimport SubscriberTable, sub_lookup
from dns_resolver.fast._tapbuf cimport TAP_UDP, TapBuffer
from dns_resolver.fast._wire cimport (AA, AF_INET, AF_INET6, CD, MSG_DONTWAIT, MSG_TRUNC, PLAIN_UDP, QR, RA,
                                 RD, TC, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_DNAME,
                                 TYPE_OPT, TYPE_SOA, add_opt, addr_text, clean_ttl, client_of,
                                 inet_ntop, iovec, ip_like, mmsghdr, mono_now, msghdr, ntohs,
                                 put16, put32, read_name, recvmmsg, sendmmsg, skip_name,
                                 sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, u16,
                                 u32, wall_now)
from filtercore._table cimport MatchCore, normalize_ascii

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil


cdef extern from "<sys/random.h>" nogil:
    ssize_t getrandom(void *buf, size_t n, unsigned int flags)


_NOTHING = ()

TRANSPORTS = ("udp", "tcp", "tls", "https")  # by T_UDP, T_TCP, T_TLS, T_HTTPS

REASONS = ("miss", "odd", "refuse", "new_block", "policy", "stale", "timeout", "upstream",
           "answer")

# metrics.LATENCY_BUCKETS, in seconds (the last bucket is +Inf).
cdef double[18] _BOUNDS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                           0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


cdef inline int _bucket(double seconds) noexcept nogil:
    """The latency histogram bucket of `seconds` (bisect_left over _BOUNDS)."""
    cdef int i = 0
    while i < 18 and seconds > _BOUNDS[i]:
        i += 1
    return i


cdef int _send_all(int fd, mmsghdr *msgs, int k) noexcept nogil:
    """sendmmsg until all `k` are sent or the socket refuses more; returns how many went.
    A full send buffer (or a client gone) drops the rest, as any lost UDP datagram."""
    cdef int sent = 0, r
    while sent < k:
        r = sendmmsg(fd, msgs + sent, k - sent, MSG_DONTWAIT)
        if r < 0:
            if errno == EINTR:
                continue
            break
        sent += r
    return sent



cdef inline uint64_t _punt_hash(uint64_t k0, uint64_t k1, int policy, const char *name,
                                size_t n) noexcept nogil:
    # Keyed per policy; never 0 (0 marks an empty slot).
    return (fc_siphash24(k0 ^ <uint64_t>policy, k1, <const unsigned char *>name, n)) | 1


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


cdef dict _by_qtype(const uint64_t *counts):
    """{(qtype, transport name): n} of a [NTRANSPORT][NQTYPE] counter array."""
    cdef int tr, i
    cdef dict out = {}
    for tr in range(NTRANSPORT):
        for i in range(NQTYPE):
            if counts[tr * NQTYPE + i]:
                out[(i if i < 256 else 65535, TRANSPORTS[tr])] = counts[tr * NQTYPE + i]
    return out


cdef tuple host_port(const uint8_t *name):
    """(host text, port) of a sockaddr_in/_in6."""
    cdef char host[64]
    cdef const sockaddr *sa = <const sockaddr *>name
    addr_text(name, host)
    if sa.sa_family == AF_INET6:
        return host.decode("ascii"), ntohs((<const sockaddr_in6 *>sa).sin6_port)
    return host.decode("ascii"), ntohs((<const sockaddr_in *>sa).sin_port)


cdef class FastPath:
    """The C side of the UDP fast path; `dns_resolver.fast.fastpath` drives it.

    Args:
        udp_size: our EDNS UDP payload size (`server.udp_payload_size`).
        max_entries: the cache bound (LRU beyond it), as `cache.max_entries`.
        prefetch, prefetch_threshold, prefetch_min_hits: the cache's prefetch settings; an
            entry due for prefetch is handed to Python, which refreshes it.
    """

    def __cinit__(self, int udp_size=1232, uint64_t max_entries=100000, bint prefetch=False,
                  double prefetch_threshold=0.1, uint32_t prefetch_min_hits=3):
        cdef bytes secret = os.urandom(16)
        cdef int i
        self.udp_size = max(PLAIN_UDP, min(udp_size, 65535))
        self.k0 = int.from_bytes(secret[:8], "little")
        self.k1 = int.from_bytes(secret[8:], "little")
        self.cache = AnswerCache(max_entries, prefetch, prefetch_threshold, prefetch_min_hits)
        self.blocks = BlockAnswers()
        self.log = LogBuffer()
        self.tap = TapBuffer()
        self.default_policy = 0
        self.policy_mask[0] = 0xFFFFFFFFFFFFFFFF
        self.policy_python[0] = False
        self.allow = <Net *>calloc(1, sizeof(Net))
        self.deny = <Net *>calloc(1, sizeof(Net))
        self.policy_nets = <Net *>calloc(1, sizeof(Net))
        self.trusted = <Net *>calloc(1, sizeof(Net))
        self.subs = NULL
        self.outsize = self.udp_size
        for i in range(MAX_USOCK):
            self.usock[i].fd = -1
        self.rndpos = sizeof(self.rnd)
        self.fwdbuf = <uint8_t *>malloc(VLEN * FWD_SIZE)
        self.inbuf = <uint8_t *>malloc(VLEN * RECV_SIZE)
        self.outbuf = <uint8_t *>malloc(VLEN * self.outsize)
        self.hosts = <uint8_t *>malloc(VLEN * HOST_BUF)
        for i in range(VLEN):
            self.slots[i].host = self.hosts + i * HOST_BUF
        if (self.inbuf == NULL or self.outbuf == NULL or self.fwdbuf == NULL
                or self.hosts == NULL or self.allow == NULL or self.deny == NULL
                or self.policy_nets == NULL):
            raise MemoryError()

    def __dealloc__(self):
        cdef int i
        free(self.allow)
        free(self.deny)
        free(self.policy_nets)
        free(self.trusted)
        free(self.punt)
        free(self.route_h)
        free(self.route_v)
        free(self.inbuf)
        free(self.outbuf)
        free(self.hosts)
        free(self.fwdbuf)
        free(self.pend)
        free(self.free_pend)
        for i in range(MAX_USOCK):
            free(self.usock[i].ids)

    # -- configuration (from Python, between batches) ------------------------------------

    def set_matcher(self, MatchCore core, object text_check=None):
        """Walk `core` from now on (None: every cache miss goes to Python). Block EDEs
        memoised for the previous lists no longer apply, so they are forgotten.

        `text_check(host, mask)` runs the lists' text rules (keywords, expressions) on a
        normalised host name a list does not name, and returns None when none applies;
        None means the lists have no text rules. Misses it passes are forwarded from C.
        """
        self.core = core
        self.text_check = text_check
        self.text_rules = text_check is not None
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
                     list trusted=None, list client_ids=None, list client_id_networks=None):
        """Client networks -> policy index ([(family, packed, prefix, index)], most specific
        first), the default index, and per index the category mask and whether all its
        queries must be decided in Python; `trusted` networks [(family, packed, prefix,
        0)]: every query from them goes to Python. `client_ids` [(ClientID, index)] and
        `client_id_networks` [(family, packed, prefix, index)]: see `_clientids.pyx`."""
        cdef int i
        if len(masks) > MAX_POLICIES or len(masks) != len(needs_python):
            raise ValueError(f"at most {MAX_POLICIES} policies, one mask and flag each")
        for _, index in client_ids or ():
            if not 0 <= index < len(masks):
                raise ValueError(f"ClientID policy index {index} out of range")
        self.ids = ClientIds(client_ids, client_id_networks or []) if client_ids else None
        self.policy_gen += 1
        free(self.policy_nets)
        self.policy_nets = NULL
        self.policy_nets = _nets(nets, &self.npolicy_nets)
        free(self.trusted)
        self.trusted = NULL
        self.trusted = _nets(trusted or [], &self.ntrusted)
        self.default_policy = default
        self.policies_on = True
        for i in range(len(masks)):
            self.policy_mask[i] = masks[i]
            self.policy_python[i] = needs_python[i]
        self.forget_blocks()

    def clear_policies(self):
        """No policy layer from now on (a config reload removed the policies)."""
        self.ids = None
        self.policy_gen += 1
        free(self.policy_nets)
        self.policy_nets = NULL
        self.npolicy_nets = 0
        free(self.trusted)
        self.trusted = NULL
        self.ntrusted = 0
        self.default_policy = 0
        self.policy_mask[0] = 0xFFFFFFFFFFFFFFFF
        self.policy_python[0] = False
        self.policies_on = False
        self.forget_blocks()

    def set_cache(self, uint64_t max_entries, bint prefetch, double prefetch_threshold,
                  uint32_t prefetch_min_hits):
        """New cache settings (a config reload), as in the constructor; the cache is
        emptied, so no entry outlives the settings it was stored under."""
        self.cache.configure(max_entries, prefetch, prefetch_threshold, prefetch_min_hits)

    def set_punt_names(self, list punt_names):
        """[(policy index, normalised name)]: upstream answers with the name or one below
        it as a CNAME target or address go to Python (index 0 without policies); queries
        for them are sent there by `set_routes`."""
        cdef uint64_t h, slot, nslots = 0
        cdef bytes raw
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

    def set_routes(self, list routes, list roots):
        """Where each query goes: [(policy index, normalised domain, upstream set or -1)],
        the most specific domain of a name deciding (-1: Python answers the name and
        everything below it), and per policy index the set (or -1) of the names no domain
        names (`roots`). Misses of a set without sockets (`add_socket`) go to Python."""
        cdef uint64_t h, slot, nslots = 0
        cdef bytes raw
        if len(roots) > MAX_POLICIES:
            raise ValueError(f"at most {MAX_POLICIES} policies")
        for value in roots:
            if not -1 <= value < MAX_USETS:
                raise ValueError(f"a root route to set {value}")
        for index, _, value in routes:
            if not -1 <= value < MAX_USETS or not 0 <= index < MAX_POLICIES:
                raise ValueError(f"a route to set {value} for policy {index}")
        free(self.route_h)
        self.route_h = NULL
        free(self.route_v)
        self.route_v = NULL
        self.nroute_slots = 0
        for i in range(MAX_POLICIES):
            self.root_set[i] = roots[i] if i < len(roots) else 0
        if routes:
            nslots = 16
            while nslots < 2 * len(routes):
                nslots <<= 1
            self.route_h = <uint64_t *>calloc(nslots, sizeof(uint64_t))
            self.route_v = <int8_t *>calloc(nslots, sizeof(int8_t))
            if self.route_h == NULL or self.route_v == NULL:
                raise MemoryError()
            for index, name, value in routes:
                raw = name.encode("ascii")
                h = _punt_hash(self.k0, self.k1, index, PyBytes_AS_STRING(raw), len(raw))
                slot = h & (nslots - 1)
                while self.route_h[slot] != 0 and self.route_h[slot] != h:
                    slot = (slot + 1) & (nslots - 1)
                self.route_h[slot] = h
                self.route_v[slot] = value
            self.nroute_slots = nslots

    def set_templates(self, list templates):
        """Block answers after the question, for A, AAAA and any other type:
        [(rcode, ancount, nscount, records)]."""
        self.blocks.set_templates(templates)

    def learn_block(self, int64_t code, int policy, bytes ede, int metric):
        """Memoise the EDE option of a block by `code` for clients of `policy`
        (`BlockAnswers.learn`)."""
        self.blocks.learn(code, policy, ede, metric)

    def forget_blocks(self):
        """Forget every memoised block EDE (lists or policies changed)."""
        self.blocks.forget()

    # -- the query log (_querylog.pyx) ------------------------------------------------

    def set_querylog(self, int anonymize, bytes key, dict qtype_json, size_t capacity):
        """Write a query log line for every answer given in C (`LogBuffer.configure`)."""
        self.log.configure(anonymize, key, qtype_json, capacity)

    def stop_querylog(self):
        """Write no more query log lines (a config reload turned the query log off); the
        lines already written stay for `take_log`."""
        self.log.stop()

    def label_block(self, int metric, bytes fields):
        """The query log's `"category":..,"list":..` for blocks counted under `metric`."""
        self.log.label_block(metric, fields)

    def take_log(self):
        """The query log lines written since the last call (bytes, whole lines)."""
        return self.log.take()

    @property
    def log_dropped(self):
        return self.log.dropped
    # -- newly observed domains (dns_resolver.observability.observed) -----------------------

    def set_observe(self, Observed observed, int v4_prefix, int v6_prefix,
                    uint32_t watch=0):
        """Hand every cache miss's name and client network (the address cut to
        `v4_prefix`/`v6_prefix` bits) to `observed` (None stops), which keeps the records
        Python takes.

        A cache entry stored from now on also passes on its first `watch` hits: the
        clients of a new domain are counted though most of them hit the cache, and an
        entry costs one untaken branch per hit after that."""
        self.observed = observed
        self.obs_v4 = max(0, min(v4_prefix, 32))
        self.obs_v6 = max(0, min(v6_prefix, 128))
        self.cache.watch = watch if observed is not None else 0

    cdef void _observe(self, const uint8_t *name, uint32_t namelen, int family,
                       const uint8_t *addr, double now) noexcept nogil:
        cdef uint8_t network[17]
        cdef int prefix, full
        memset(network, 0, 17)
        network[0] = family
        prefix = self.obs_v4 if family == 4 else self.obs_v6
        full = prefix >> 3
        memcpy(network + 1, addr, full)
        if prefix & 7:
            network[1 + full] = addr[full] & ((0xFF << (8 - (prefix & 7))) & 0xFF)
        self.observed.note(name, namelen, network, now)

    # -- dnstap (_tapbuf.pyx) -------------------------------------------------------------

    def set_dnstap(self, bint query, bint response, int anonymize, bytes key, bytes prefix,
                   size_t capacity, bint forwarder_query=False, bint forwarder_response=False):
        """Write dnstap frames for every client exchange answered in C, and for every
        upstream exchange of the queries C forwards (`TapBuffer.configure`)."""
        self.tap.configure(query, response, anonymize, key, prefix, capacity,
                           forwarder_query, forwarder_response)

    def set_dnstap_peer(self, int uset, int family, bytes address, int port, int protocol):
        """The upstream C forwards upstream set `uset` to, for forwarder messages
        (`TapBuffer.set_peer`)."""
        self.tap.set_peer(uset, family, address, port, protocol)

    def take_tap(self):
        """(frames written since the last call, back to back; how many)."""
        return self.tap.take()

    @property
    def tap_dropped(self):
        return self.tap.dropped

    cdef void _tap(self, const void *sa, int protocol, const uint8_t *q, uint32_t qlen,
                   const uint8_t *r, uint32_t rlen, int edeidx, double qwall,
                   double rwall) noexcept nogil:
        """The frames of an exchange over `protocol` (TAP_UDP, TAP_TCP); a block
        (`edeidx` >= 0) carries its EDE text."""
        if 0 <= edeidx < self.blocks.nede:
            self.tap.write(sa, protocol, q, qlen, r, rlen, self.blocks.ede_opts[edeidx],
                           self.blocks.ede_lens[edeidx], qwall, rwall)
        else:
            self.tap.write(sa, protocol, q, qlen, r, rlen, NULL, 0, qwall, rwall)

    cdef void _count_latency(self, uint64_t k, double lat) noexcept nogil:
        """`k` answers given in C `lat` seconds after their queries came in."""
        self.c_latency[_bucket(lat)] += k
        self.c_latency_sum += lat * k
    # -- forwarding (from Python: `dns_resolver.upstreams.fastforward`) ----------------------------

    def set_upstream(self, int udp_size, double timeout, bint inspect,
                     bint expired_to_python, uint32_t min_ttl, uint32_t max_ttl,
                     uint32_t negative_max_ttl):
        """Forward misses from C from now on, on the sockets given by `add_socket`.

        Args:
            udp_size: the EDNS payload size of our upstream queries (the forwarder's).
            timeout: seconds before a query is handed to Python to be asked again.
            inspect: check CNAME targets and addresses of answers against the lists.
            expired_to_python: expired entries go to Python (serve-stale, prefetch)
                instead of being asked again from C.
            min_ttl, max_ttl, negative_max_ttl: the cache's TTL clamps (cache.py).
        """
        cdef int i
        if self.pend == NULL:
            self.pend = <Pending *>calloc(MAX_PENDING, sizeof(Pending))
            self.free_pend = <int32_t *>malloc(MAX_PENDING * sizeof(int32_t))
            if self.pend == NULL or self.free_pend == NULL:
                raise MemoryError()
            for i in range(MAX_PENDING):
                self.pend[i].usock = -1
                self.free_pend[i] = MAX_PENDING - 1 - i
            self.nfree = MAX_PENDING
        self.up_udp_size = max(PLAIN_UDP, min(udp_size, 65535))
        self.up_timeout = timeout
        self.inspect = inspect
        self.expired_to_python = expired_to_python
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_max_ttl = negative_max_ttl
        self.forwarding = True

    def stop_forwarding(self):
        """Send no more misses upstream from C (queries in flight still finish)."""
        self.forwarding = False

    def add_socket(self, int fd, int uset=0):
        """Take new upstream queries of upstream set `uset` on `fd` (connected,
        non-blocking). Returns its slot."""
        cdef int s
        if not 0 <= uset < MAX_USETS:
            raise ValueError(f"upstream set {uset} is not below {MAX_USETS}")
        for s in range(MAX_USOCK):
            if self.usock[s].fd < 0:
                self.usock[s].ids = <uint16_t *>calloc(65536, sizeof(uint16_t))
                if self.usock[s].ids == NULL:
                    raise MemoryError()
                self.usock[s].fd = fd
                self.usock[s].active = True
                self.usock[s].uset = uset
                self.usock[s].inflight = 0
                self.nusock = max(self.nusock, s + 1)
                self.usock[s].used = 0
                return s
        raise RuntimeError(f"more than {MAX_USOCK} upstream sockets")

    def retire_socket(self, int s):
        """No new queries on slot `s`; its answers are still read until `release`."""
        if 0 <= s < MAX_USOCK:
            self.usock[s].active = False

    def answered(self, int uset):
        """Upstream answers matched so far for set `uset` (its health: a change clears
        its upstream's failures)."""
        return self.up_answered[uset] if 0 <= uset < MAX_USETS else 0

    def socket_state(self, int s):
        """(fd, active, queries in flight, queries sent) of slot `s`."""
        cdef USock *u = &self.usock[s]
        return u.fd, bool(u.active), u.inflight, u.used

    def release_socket(self, int s):
        """Forget slot `s` (its socket is about to close). Queries still waiting on it go
        to Python, returned as `serve_upstream` returns them (reason R_UPSTREAM)."""
        cdef list rest = []
        if not 0 <= s < MAX_USOCK or self.usock[s].fd < 0:
            return rest
        self._waiting_on(s, rest)
        free(self.usock[s].ids)
        self.usock[s].ids = NULL
        self.usock[s].fd = -1
        self.usock[s].active = False
        return rest

    def expire_due(self):
        """Queries whose upstream answer is overdue, for Python to ask again (R_TIMEOUT)."""
        cdef list rest = None
        cdef int i
        cdef double now
        if self.inflight == 0:
            return _NOTHING
        now = mono_now()
        for i in range(MAX_PENDING):
            if self.pend[i].usock >= 0 and now - self.pend[i].sent >= self.up_timeout:
                if rest is None:
                    rest = []
                rest.append(self._hand_over(i, R_TIMEOUT, None))
        return rest if rest is not None else _NOTHING

    cdef int _pend_new(self) noexcept nogil:
        if self.nfree == 0:
            return -1
        self.nfree -= 1
        return self.free_pend[self.nfree]

    cdef void _pend_free(self, int idx) noexcept nogil:
        self.pend[idx].usock = -1
        self.free_pend[self.nfree] = idx
        self.nfree += 1

    cdef void _detach(self, int idx) noexcept nogil:
        """Stop waiting for the upstream answer of pending `idx` (answered or given up)."""
        cdef Pending *p = &self.pend[idx]
        cdef USock *u
        if p.usock < 0:
            return
        u = &self.usock[p.usock]
        if u.ids != NULL and u.ids[p.uid] == idx + 1:
            u.ids[p.uid] = 0
        u.inflight -= 1
        self.inflight -= 1
        p.usock = -2  # taken out of the socket, not yet freed

    cdef uint16_t _random16(self) noexcept nogil:
        cdef uint16_t v
        if self.rndpos + 2 > <int>sizeof(self.rnd):
            if getrandom(self.rnd, sizeof(self.rnd), 0) != sizeof(self.rnd):
                # No entropy call (never seen on Linux): the IDs must stay unguessable,
                # so nothing more is forwarded from C.
                self.forwarding = False
            self.rndpos = 0
        v = (self.rnd[self.rndpos] << 8) | self.rnd[self.rndpos + 1]
        self.rndpos += 2
        return v

    cdef object _hand_over(self, int idx, int reason, object answer):
        """Give pending `idx` up to Python: (client datagram, host, port, reason, listener
        fd, upstream answer or None, seconds since the client's query arrived, upstream
        set). It stops waiting and its entry is freed."""
        cdef Pending *p = &self.pend[idx]
        self._detach(idx)
        host, port = host_port(p.name)
        out = (PyBytes_FromStringAndSize(<char *>p.query, p.qlen), host, port, reason, p.fd,
               answer, mono_now() - p.started, p.uset)
        self._pend_free(idx)
        return out

    cdef int _waiting_on(self, int s, list rest) except -1:
        """Hand every query waiting on upstream socket `s` over (R_UPSTREAM) into `rest`."""
        cdef int i
        if self.pend != NULL:
            for i in range(MAX_PENDING):
                if self.pend[i].usock == s:
                    rest.append(self._hand_over(i, R_UPSTREAM, None))
        return 0

    # -- the cache (_cache.pyx) -----------------------------------------------------------

    def store(self, bytes key, bytes body, tuple offsets, tuple ttls, double stored,
              uint32_t lifetime, bytes ede):
        """Cache `body` under `key` (`AnswerCache.store`)."""
        self.cache.store(key, body, offsets, ttls, stored, lifetime, ede)

    def fetch(self, bytes key):
        """The entry cached under `key` (`AnswerCache.fetch`), or None."""
        return self.cache.fetch(key)

    def discard(self, bytes key):
        """Forget one entry, if cached."""
        self.cache.discard(key)

    def clear(self):
        """Drop every cached answer."""
        self.cache.clear()

    @property
    def entries(self):
        return self.cache.entries
    # -- clients ------------------------------------------------------------------------

    cdef bint _allowed(self, int family, const uint8_t *addr) noexcept nogil:
        cdef int i
        for i in range(self.ndeny):
            if in_net(&self.deny[i], family, addr):
                return False
        for i in range(self.nallow):
            if in_net(&self.allow[i], family, addr):
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

    cdef int _route(self, int policy, const char *name, uint32_t n) noexcept nogil:
        """The upstream set of `name` (lower-case, dotted) for `policy`: its most specific
        domain's in the routes, else the policy's default set; -1: Python answers it."""
        cdef uint32_t start = 0
        cdef uint64_t h, slot
        if self.nroute_slots == 0 or n == 0:
            return self.root_set[policy]
        while True:
            h = _punt_hash(self.k0, self.k1, policy, name + start, n - start)
            slot = h & (self.nroute_slots - 1)
            while self.route_h[slot] != 0:
                if self.route_h[slot] == h:
                    return self.route_v[slot]
                slot = (slot + 1) & (self.nroute_slots - 1)
            while start < n and name[start] != 46:
                start += 1
            if start >= n:
                return self.root_set[policy]
            start += 1

    cdef int _policy_of(self, int family, const uint8_t *addr) noexcept nogil:
        cdef int i
        for i in range(self.npolicy_nets):
            if in_net(&self.policy_nets[i], family, addr):
                return self.policy_nets[i].value
        return self.default_policy

    cdef int client_id_policy(self, const char *cid, uint32_t n, const void *sa) noexcept nogil:
        cdef int family
        cdef const uint8_t *addr
        if self.ids is None or not self.policies_on or client_of(sa, &family, &addr) < 0:
            return -1
        return self.ids.lookup(cid, n, family, addr)

    def policy_of_client_id(self, str client_id, str host):
        """The policy index `client_id_policy` gives ClientID `client_id` from address
        `host` (-1: the address decides), for tests."""
        cdef sockaddr_storage sa
        cdef bytes raw = client_id.encode()
        memset(&sa, 0, sizeof(sa))
        ip = ipaddress.ip_address(host)
        if ip.version == 4:
            (<sockaddr_in *>&sa).sin_family = AF_INET
            memcpy(&(<sockaddr_in *>&sa).sin_addr, <char *>ip.packed, 4)
        else:
            (<sockaddr_in6 *>&sa).sin6_family = AF_INET6
            memcpy((<sockaddr_in6 *>&sa).sin6_addr.s6_addr, <char *>ip.packed, 16)
        return self.client_id_policy(raw, <uint32_t>len(raw), &sa)

    # -- rate limits per client network and RFC 8482 ANY answers --------------------------

    def set_ratelimit(self, RateLimiter limiter):
        """Charge every UDP query to `limiter` (None: no limits) before anything else; the
        Python chain charges TCP queries to the same `limiter`."""
        self.limiter = limiter
        self.limiting = limiter is not None

    cdef bint _limited(self, const uint8_t *d, uint32_t n, const void *sa, uint8_t *out,
                       Slot *slot, double now, bint tcp) noexcept nogil:
        """Charge the query to its client network's bucket (UDP or TCP). Over the limit:
        True, and `slot` holds the configured action (no answer, REFUSED, or an empty
        answer with TC; over TCP always REFUSED, as `RateLimiter.limit` says); a query
        whose question cannot be echoed is dropped whatever the action."""
        cdef int family, verdict, action
        cdef const uint8_t *addr
        cdef uint32_t qend
        cdef uint16_t qflags
        cdef bint edns = False, do = False
        if client_of(sa, &family, &addr) < 0:
            return False
        verdict = self.limiter.check(family, addr, now, tcp)
        if verdict == RL_PASS:
            return False
        action = RL_REFUSED if tcp else self.limiter.action
        slot.verdict = DROPPED
        slot.result = L_LIMITED if verdict == RL_LIMITED_LOG else L_QUIET
        slot.qtype = 0
        qend = skip_name(d, n, 12) if u16(d + 4) == 1 else 0
        if qend == 0 or qend + 4 > n or qend - 12 > 255:
            self.limiter.count(RL_DROP)
            return True
        slot.qtype = u16(d + qend)
        qend += 4
        if action == RL_DROP:
            self.limiter.count(RL_DROP)
            return True
        # An OPT right after the question: echo EDNS (and DO) as every answer does.
        if u16(d + 10) == 1 and qend + 11 <= n and d[qend] == 0 and (
                u16(d + qend + 1) == TYPE_OPT):
            edns = True
            do = (d[qend + 7] & 0x80) != 0
        qflags = u16(d + 2)
        out[0] = d[0]
        out[1] = d[1]
        put16(out + 2, QR | RA | (qflags & (0x7800 | RD | CD))
               | (TC if action == RL_TRUNCATE else 5))  # 5: REFUSED
        put16(out + 4, 1)
        memset(out + 6, 0, 6)
        out[11] = 1 if edns else 0
        memcpy(out + 12, d + 12, qend - 12)
        slot.outlen = add_opt(out, qend, edns, do, self.udp_size, NULL, 0)
        slot.verdict = ANSWERED
        self.limiter.count(action)
        return True

    cdef uint32_t _any_answer(self, const uint8_t *d, uint32_t qend, uint16_t qflags,
                              uint16_t qclass, bint edns, bint do, uint8_t *out) noexcept nogil:
        """RFC 8482 4.2: ANY is answered with one synthesised HINFO ("RFC8482" ""), so no
        query draws a large answer. `Resolver._any` builds the same answer."""
        out[0] = d[0]
        out[1] = d[1]
        put16(out + 2, QR | RA | (qflags & (0x7800 | RD | CD)))
        put16(out + 4, 1)
        put16(out + 6, 1)
        put16(out + 8, 0)
        put16(out + 10, 1 if edns else 0)
        memcpy(out + 12, d + 12, qend - 12)
        # Owner: the question name; type HINFO; class (below); TTL 3600; "RFC8482" "".
        memcpy(out + qend, b"\xc0\x0c\x00\x0d\x00\x01\x00\x00\x0e\x10\x00\x09"
               b"\x07RFC8482\x00", 21)
        put16(out + qend + 4, qclass)
        return add_opt(out, qend + 21, edns, do, self.udp_size, NULL, 0)
    # -- subscribers (docs/subscribers.md) -------------------------------------------------

    def set_subscribers(self, SubscriberTable table):
        """Consult `table` (a mapped subscribers' table, or None) for every query's policy,
        after the trusted forwarders and before the policy networks."""
        self.subs_table = table
        self.subs = table.header if table is not None else NULL

    cdef int _subscriber_policy(self, int family, const uint8_t *addr) noexcept nogil:
        """The policy index of the subscriber holding the address; -1: none; -2: Python
        decides (the subscriber has own lists, or the writer kept the table busy)."""
        cdef uint32_t lists = 0
        cdef int r = sub_lookup(self.subs, family, addr, &lists)
        if r == -2 or (r >= 0 and (lists != 0 or r >= MAX_POLICIES)):
            return -2
        return r

    # -- one query ------------------------------------------------------------------------

    cdef void _one(self, const uint8_t *d, uint32_t n, const void *sa, uint8_t *out,
                   Slot *slot, double now, int transport, int id_policy=-1) noexcept nogil:
        """Answer query `d` from `sa` into `out` if C can (slot.verdict ANSWERED), else say
        why not. `transport` T_UDP or a stream's (T_TCP, T_TLS, T_HTTPS): over a stream
        there is no size limit but 65,535, the rate limiter's TCP bucket is charged, and a
        miss goes to Python (C forwards only for UDP clients). `id_policy`: the policy the
        client's ClientID selects (`client_id_policy`), which comes before the rest of the
        address's rules; -1: none."""
        cdef uint16_t qflags, qtype, qclass, ar, udp = 0, rdlen, olen
        cdef uint32_t pos, qend, i, limit, age
        cdef uint8_t c, length
        cdef Pending *p
        cdef uint8_t key[MAX_KEY]
        cdef char name[256]
        cdef char norm[256]
        cdef uint32_t keylen = 0, namelen = 0
        cdef bint edns = False, do = False
        cdef int family, policy, idx, t, uset
        cdef const uint8_t *addr
        cdef uint64_t h
        cdef Entry *e
        cdef Py_ssize_t nn
        cdef int64_t code
        slot.verdict = TO_PYTHON
        slot.reason = R_ODD
        slot.result = L_CACHED
        if n < 12 or d[2] & 0x80:
            slot.verdict = DROPPED  # garbage or a response: Python drops these too
            return
        if self.limiting and self._limited(d, n, sa, out, slot, now, transport != T_UDP):
            return
        qflags = u16(d + 2)
        ar = u16(d + 10)
        if (qflags & 0x7800) or u16(d + 4) != 1 or u16(d + 6) or u16(d + 8) or ar > 1:
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
        qtype = u16(d + pos + 1)
        qclass = u16(d + pos + 3)
        if ar:
            # Only an OPT record may follow: root owner, type 41, well-formed options.
            pos = qend
            if pos + 11 > n or d[pos] != 0 or u16(d + pos + 1) != TYPE_OPT:
                return
            if d[pos + 6] != 0:
                return  # EDNS version other than 0: BADVERS from Python
            udp = u16(d + pos + 3)
            do = (d[pos + 7] & 0x80) != 0
            rdlen = u16(d + pos + 9)
            pos += 11
            if pos + rdlen > n:
                return
            i = pos
            while i < pos + rdlen:
                if i + 4 > pos + rdlen:
                    return
                olen = u16(d + i + 2)
                i += 4 + olen
                if i > pos + rdlen:
                    return
            edns = True
            if udp < PLAIN_UDP:
                udp = PLAIN_UDP
        if client_of(sa, &family, &addr) < 0:
            return
        if not self._allowed(family, addr):
            slot.reason = R_REFUSE
            return
        if qtype == TYPE_ANY:
            slot.outlen = self._any_answer(d, qend, qflags, qclass, edns, do, out)
            slot.verdict = ANSWERED
            slot.result = L_ALLOWED
            slot.qtype = qtype
            self.c_allowed[transport][TYPE_ANY] += 1
            return
        policy = id_policy if self.policies_on else -1
        if policy < 0 and self.ntrusted:
            for i in range(self.ntrusted):
                if in_net(&self.trusted[i], family, addr):
                    slot.reason = R_POLICY  # client ids / ECS are mapped in Python
                    return
        if policy < 0 and self.subs != NULL:
            policy = self._subscriber_policy(family, addr)
            if policy == -2:
                slot.reason = R_POLICY  # own lists (or a busy table): Python decides
                return
        if policy < 0:
            policy = self._policy_of(family, addr)
        if self.policy_python[policy]:
            slot.reason = R_POLICY
            return
        # One walk over the name's suffixes: its upstream set, or -1 for the names Python
        # answers (punt names, local records, locally served zones: set_routes).
        uset = self._route(policy, name, namelen)
        if uset < 0:
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
        if transport != T_UDP:
            limit = 65535
        else:
            limit = (udp if udp < self.udp_size else self.udp_size) if edns else PLAIN_UDP
        t = qtype if qtype < 256 else 256
        h = fc_siphash24(self.cache.k0, self.cache.k1, key, keylen)
        e = cache_find(self.cache, key, keylen, h)
        if e != NULL and now - e.stored >= e.lifetime and not self.expired_to_python:
            self.cache.drop(e)  # asked again below, from C, as any miss
            e = NULL
        if e != NULL:
            age = <uint32_t>(now - e.stored) if now > e.stored else 0
            if now - e.stored >= e.lifetime:
                slot.reason = R_STALE
                return
            if (self.cache.prefetch and e.hits + 1 >= self.cache.prefetch_min_hits
                    and e.lifetime - age <= e.lifetime * self.cache.prefetch_threshold):
                slot.reason = R_STALE
                return
            e.hits += 1
            if e.watch:
                e.watch -= 1
                if self.observed is not None and namelen:
                    self._observe(<const uint8_t *>name, namelen, family, addr, now)
            cache_touch(self.cache, e)
            slot.outlen = fill(e.body, e.bodylen, e.offsets, e.ttls, e.nttl, age, d, qend,
                               qflags, edns, do, limit, self.udp_size, e.ede, e.edelen, out)
            slot.verdict = ANSWERED
            slot.result = L_CACHED
            slot.qtype = qtype
            self.c_cached[transport][t] += 1
            self.c_hits += 1
            return
        else:
            if self.observed is not None and namelen:
                self._observe(<const uint8_t *>name, namelen, family, addr, now)
            if self.core is None or not self.blocks.ready or namelen == 0:
                slot.reason = R_MISS
                return
            if ip_like(name, namelen):
                slot.reason = R_MISS  # IP literals take Matcher.check's Python path
                return
            nn = normalize_ascii(name, namelen, norm)
            if nn == -1:
                slot.reason = R_MISS  # an A-label: Punycode is checked in Python
                return
            # Not a host name (an underscore label is one; "a+b" is not): nothing a list
            # can name, as Resolver._check treats InvalidNameError, text rules included.
            code = self.core.walk_buf(norm, nn, self.policy_mask[policy]) if nn > 0 else -1
            if code < 0 or code & 1:
                # Allowed or unlisted: the upstream is needed. Text rules (keywords,
                # expressions) may still block an unlisted name: serve() runs them.
                slot.reason = R_MISS
                if self.forwarding and n <= QUERY_KEEP and transport == T_UDP:
                    idx = self._pend_new()
                    if idx >= 0:
                        p = &self.pend[idx]
                        p.started = now
                        p.hash = h
                        p.keylen = keylen
                        memcpy(p.key, key, keylen)
                        p.qflags = qflags
                        p.qtype = qtype
                        p.edns = edns
                        p.do = do
                        p.allow = code >= 0
                        p.policy = policy
                        p.uset = <uint8_t>uset
                        p.mask = self.policy_mask[policy]
                        p.limit = limit
                        p.qlen = n
                        p.qend = qend
                        memcpy(p.query, d, n)
                        slot.code = idx
                        if code < 0 and nn > 0 and self.text_rules:
                            slot.verdict = TEXT_CHECK
                            memcpy(slot.host, norm, nn)
                            slot.host[nn] = 0
                            slot.hostlen = <uint32_t>nn + 1
                        else:
                            slot.verdict = FORWARD
                return
            idx = ede_find(self.blocks, code | (<int64_t>policy << 56))
            if idx < 0:
                slot.reason = R_NEW_BLOCK
                slot.code = code
                return
            slot.outlen = self.blocks.write(idx, d, qend, qflags, qtype, qclass, edns, do,
                                            limit, self.udp_size, out)
            self.c_blocked[transport][t] += 1
            if self.cache.max_entries:
                self.c_misses += 1  # Python's handle counts the cache lookup too
            self.c_blocks[self.blocks.ede_metric[idx]] += 1
            slot.verdict = ANSWERED
            slot.result = L_BLOCKED
            slot.metric = self.blocks.ede_metric[idx]
            slot.code = idx  # dnstap's Policy reads the EDE text
            slot.qtype = qtype

    # -- batches --------------------------------------------------------------------------

    cdef int _round(self, int fd) noexcept nogil:
        """One recvmmsg + answers + sendmmsg. Returns the datagrams read, -1 when none."""
        cdef mmsghdr msgs[VLEN]
        cdef iovec iovs[VLEN]
        cdef mmsghdr outm[VLEN]
        cdef iovec outv[VLEN]
        cdef int i, n, k = 0, nf = 0
        cdef double wall
        cdef int fwd[VLEN]
        cdef int fslot[VLEN]
        cdef double now, lat
        cdef Pending *p
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
        now = mono_now()
        self.batches += 1
        self.datagrams += n
        for i in range(n):
            self.slots[i].inlen = msgs[i].msg_len
            self.slots[i].namelen = msgs[i].msg_hdr.msg_namelen
            if msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.slots[i].verdict = DROPPED  # longer than any sane query
                self.slots[i].result = L_CACHED
                continue
            self._one(self.inbuf + i * RECV_SIZE, msgs[i].msg_len, self.slots[i].name,
                      self.outbuf + i * self.outsize, &self.slots[i], now, T_UDP)
            if self.slots[i].verdict == ANSWERED:
                outv[k].iov_base = self.outbuf + i * self.outsize
                outv[k].iov_len = self.slots[i].outlen
                memset(&outm[k].msg_hdr, 0, sizeof(msghdr))
                outm[k].msg_hdr.msg_name = self.slots[i].name
                outm[k].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen
                outm[k].msg_hdr.msg_iov = &outv[k]
                outm[k].msg_hdr.msg_iovlen = 1
                k += 1
            elif self.slots[i].verdict == FORWARD or self.slots[i].verdict == TEXT_CHECK:
                p = &self.pend[self.slots[i].code]
                p.fd = fd
                p.namelen = msgs[i].msg_hdr.msg_namelen
                memcpy(p.name, self.slots[i].name, sizeof(p.name))
                if self.slots[i].verdict == FORWARD:
                    fwd[nf] = <int>self.slots[i].code
                    fslot[nf] = i
                    nf += 1
            elif self.slots[i].verdict == TO_PYTHON:
                self.python_fallbacks += 1
        self._forward(fwd, fslot, nf)
        # Counted before sending: a client that has its answer sees it counted.
        self.fast_answers += k
        _send_all(fd, outm, k)
        lat = 0
        if k:
            lat = mono_now() - now
            self._count_latency(k, lat)
        if self.log.on:
            wall = wall_now()
            for i in range(n):
                # Answers, and one line per second for a network over its rate limit
                # (whether its queries are answered or dropped).
                if ((self.slots[i].verdict == ANSWERED and self.slots[i].result >= 0)
                        or self.slots[i].result == L_LIMITED):
                    self.log.write(self.slots[i].name, self.inbuf + i * RECV_SIZE,
                                   self.slots[i].inlen, self.slots[i].qtype,
                                   self.slots[i].result, self.slots[i].metric, lat, wall,
                                   "udp")
        if self.tap.on:
            wall = wall_now()
            for i in range(n):
                if self.slots[i].verdict == ANSWERED:
                    self._tap(self.slots[i].name, TAP_UDP, self.inbuf + i * RECV_SIZE,
                              self.slots[i].inlen, self.outbuf + i * self.outsize,
                              self.slots[i].outlen,
                              <int>self.slots[i].code
                              if self.slots[i].result == L_BLOCKED else -1,
                              wall - lat, wall)
        return n

    # -- forwarding: queries out, answers in ------------------------------------------

    cdef void _forward(self, int *fwd, int *fslot, int nf) noexcept nogil:
        """Send the pending queries `fwd` of batch slots `fslot` upstream. What could not
        be sent from C goes to Python as an ordinary miss."""
        cdef int i, j, k, sent, uset
        cdef uint32_t sets = 0
        cdef int idx[VLEN]
        cdef int islot[VLEN]
        if nf == 0:
            return
        for i in range(nf):
            sets |= 1u << self.pend[fwd[i]].uset
        for uset in range(MAX_USETS):
            if not sets & (1u << uset):
                continue
            if sets == (1u << uset):  # one set in the batch (nearly always): no copy
                k = nf
                memcpy(idx, fwd, nf * sizeof(int))
                memcpy(islot, fslot, nf * sizeof(int))
            else:
                k = 0
                for j in range(nf):
                    if self.pend[fwd[j]].uset == uset:
                        idx[k] = fwd[j]
                        islot[k] = fslot[j]
                        k += 1
            sent = self._send_upstream(uset, idx, k)
            for i in range(sent, k):
                self._pend_free(idx[i])
                self.slots[islot[i]].verdict = TO_PYTHON
                self.slots[islot[i]].reason = R_MISS
                self.python_fallbacks += 1

    cdef void _text_checks(self, int n):
        """Run the text rules on this batch's TEXT_CHECK names (with the GIL: they are
        Python's keywords and expressions); forward those no rule applies to, and leave
        the rest to Python, which makes the verdict and its answer."""
        cdef int fwd[VLEN]
        cdef int fslot[VLEN]
        cdef int nf = 0, i
        cdef Slot *s
        for i in range(n):
            s = &self.slots[i]
            if s.verdict != TEXT_CHECK:
                continue
            if not self._text_hit(s, self.pend[s.code].mask):
                fwd[nf] = <int>s.code
                fslot[nf] = i
                nf += 1
            else:
                self._pend_free(<int>s.code)
                s.verdict = TO_PYTHON
                s.reason = R_MISS
                self.python_fallbacks += 1
        with nogil:
            self._forward(fwd, fslot, nf)

    cdef bint _text_hit(self, Slot *s, uint64_t mask):
        """Whether a text rule applies (under `mask`) to a name in `s.host`."""
        cdef uint32_t at = 0, end
        while at < s.hostlen:
            end = at + <uint32_t>strlen(<char *>s.host + at)
            try:
                if self.text_check(
                        PyUnicode_DecodeASCII(<char *>s.host + at, end - at, NULL),
                        mask) is not None:
                    return True
            except Exception:
                return True  # Python's chain meets the same failure and answers for it
            at = end + 1
        return False

    cdef void _text_checks_answers(self, int n):
        """Run the text rules on the CNAME/DNAME targets of this round's TEXT_CHECK
        answers; finish in C the answers they pass, hand the rest to Python."""
        cdef int i, answered = 0
        cdef uint32_t outlen
        cdef Slot *s
        cdef Pending *p
        for i in range(n):
            s = &self.slots[i]
            if s.verdict != TEXT_CHECK:
                continue
            p = &self.pend[s.code]
            s.verdict = TO_PYTHON
            s.reason = R_ANSWER
            if not self._text_hit(s, p.mask) and self._answer(
                    self.inbuf + i * RECV_SIZE, s.inlen, p, self.outbuf + i * self.outsize,
                    &outlen, mono_now(), NULL) == 0:
                self._answered(s, p, outlen)
                answered += 1
        if answered:
            with nogil:
                self._send_answered(n)

    cdef int _send_upstream(self, int uset, int *idx, int k) noexcept nogil:
        """Send pending queries `idx` on the next active socket of upstream set `uset`
        (one sendmmsg).
        Returns how many went out: the first ones; the caller hands the rest to Python."""
        cdef mmsghdr msgs[VLEN]
        cdef iovec iovs[VLEN]
        cdef int s = -1, j, sent, tries
        cdef uint16_t uid
        cdef uint8_t *m
        cdef Pending *p
        cdef USock *u
        cdef double now = mono_now(), wall
        cdef int cur = self.ucur[uset]
        for tries in range(self.nusock):
            cur = (cur + 1) % self.nusock
            if (self.usock[cur].fd >= 0 and self.usock[cur].active
                    and self.usock[cur].uset == uset):
                s = cur
                break
        self.ucur[uset] = cur
        if s < 0 or not self.forwarding:
            return 0
        u = &self.usock[s]
        for j in range(k):
            p = &self.pend[idx[j]]
            # A random ID not in flight on this socket (RFC 5452: ID and port unguessable).
            uid = self._random16()
            while u.ids[uid] != 0:
                uid = self._random16()
            u.ids[uid] = idx[j] + 1
            p.uid = uid
            p.usock = s
            p.sent = now
            # build_query() in upstream.py: the client's question, RD/CD, our OPT + DO.
            m = self.fwdbuf + j * FWD_SIZE
            put16(m, uid)
            put16(m + 2, p.qflags & (RD | CD))
            put16(m + 4, 1)
            put16(m + 6, 0)
            put16(m + 8, 0)
            put16(m + 10, 1)
            memcpy(m + 12, p.query + 12, p.qend - 12)
            m += p.qend
            m[0] = 0
            put16(m + 1, TYPE_OPT)
            put16(m + 3, self.up_udp_size)
            put32(m + 5, 0x8000 if p.do else 0)
            put16(m + 9, 0)
            iovs[j].iov_base = self.fwdbuf + j * FWD_SIZE
            iovs[j].iov_len = p.qend + 11
            memset(&msgs[j].msg_hdr, 0, sizeof(msghdr))
            msgs[j].msg_hdr.msg_iov = &iovs[j]
            msgs[j].msg_hdr.msg_iovlen = 1
        sent = _send_all(u.fd, msgs, k)
        if self.tap.fwd_on:
            wall = wall_now()
            for j in range(sent):
                self.pend[idx[j]].sent_wall = wall
                self.tap.forward(uset, False, self.fwdbuf + j * FWD_SIZE, iovs[j].iov_len,
                                 wall, 0)
        for j in range(sent, k):
            p = &self.pend[idx[j]]
            u.ids[p.uid] = 0
            p.usock = -1
        u.inflight += sent
        u.used += sent
        self.inflight += sent
        return sent

    cdef int _uround(self, int s, double now) noexcept nogil:
        """One recvmmsg on upstream socket `s`, answers out with sendmmsg. Returns the
        datagrams read, -1 when none, -2 when the upstream's port is closed. Answers whose
        CNAME targets the text rules must pass first are left as TEXT_CHECK."""
        cdef mmsghdr msgs[VLEN]
        cdef iovec iovs[VLEN]
        cdef int i, n, idx, r
        cdef uint32_t len_, outlen, q
        cdef uint16_t uid, rcode
        cdef const uint8_t *d
        cdef Pending *p
        cdef USock *u = &self.usock[s]
        cdef bint same
        cdef double lat, wall = 0
        if u.fd < 0:
            return -1
        for i in range(VLEN):
            iovs[i].iov_base = self.inbuf + i * RECV_SIZE
            iovs[i].iov_len = RECV_SIZE
            memset(&msgs[i].msg_hdr, 0, sizeof(msghdr))
            msgs[i].msg_hdr.msg_iov = &iovs[i]
            msgs[i].msg_hdr.msg_iovlen = 1
        n = recvmmsg(u.fd, msgs, VLEN, MSG_DONTWAIT, NULL)
        if n <= 0:
            return -2 if n < 0 and errno == ECONNREFUSED else -1
        for i in range(n):
            self.slots[i].verdict = DROPPED
            d = self.inbuf + i * RECV_SIZE
            len_ = msgs[i].msg_len
            if len_ < 12 or not d[2] & 0x80:
                self.c_up_garbage[u.uset] += 1
                continue
            uid = u16(d)
            idx = <int>u.ids[uid] - 1
            same = idx >= 0
            if same:
                p = &self.pend[idx]
                same = u16(d + 4) == 1 and len_ >= p.qend
            if same:
                for q in range(12, p.qend):
                    if (d[q] | 0x20 if 65 <= d[q] <= 90 else d[q]) != (
                            p.query[q] | 0x20 if 65 <= p.query[q] <= 90 else p.query[q]):
                        same = False
                        break
            if not same:
                # Not ours (another ID or question; or late, after a timeout): as
                # upstream.py tells them apart, spoofed if it parses, else garbage.
                q = skip_name(d, len_, 12) if u16(d + 4) == 1 else 0
                if q and q + 4 <= len_:
                    self.c_up_spoofed[u.uset] += 1
                else:
                    self.c_up_garbage[u.uset] += 1
                continue
            self._detach(idx)
            if self.tap.fwd_on:
                # The exchange as the upstream had it, whatever becomes of the answer.
                if wall == 0:
                    wall = wall_now()
                self.tap.forward(u.uset, True, d, len_, p.sent_wall, wall)
            self.slots[i].code = idx
            self.slots[i].inlen = len_
            self.slots[i].verdict = TO_PYTHON
            rcode = d[3] & 0xF
            if msgs[i].msg_hdr.msg_flags & MSG_TRUNC or d[2] & (TC >> 8) or (
                    rcode != 0 and rcode != 3):
                # TC (Python goes on over TCP), SERVFAIL/REFUSED/... (Python fails over),
                # longer than our buffer (handed over without it: a network failure).
                self.slots[i].reason = R_UPSTREAM
                if msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                    self.slots[i].inlen = 0
                continue
            lat = now - p.sent
            self.c_up_latency[u.uset][_bucket(lat)] += 1
            self.c_up_latency_sum[u.uset] += lat
            self.up_answered[u.uset] += 1
            # Counted when answered: a query handed over is counted by Python's attempt.
            self.c_up_queries[u.uset] += 1
            r = self._answer(d, len_, p, self.outbuf + i * self.outsize, &outlen, now,
                             &self.slots[i] if self.text_rules else NULL)
            if r == 1:
                self.slots[i].reason = R_ANSWER
            elif r == 2:
                self.slots[i].verdict = TEXT_CHECK
            else:
                self._answered(&self.slots[i], p, outlen)
        self._send_answered(n)
        return n

    cdef void _answered(self, Slot *s, Pending *p, uint32_t outlen) noexcept nogil:
        """Count and log the answer to pending `p` that `s` holds, to be sent."""
        cdef double lat = mono_now() - p.started
        cdef double wall
        s.verdict = ANSWERED
        s.outlen = outlen
        self._count_latency(1, lat)
        self.c_allowed[T_UDP][p.qtype if p.qtype < 256 else 256] += 1
        if self.log.on:
            self.log.write(p.name, p.query, p.qlen, p.qtype, L_ALLOWED, -1, lat, wall_now(),
                           "udp")
        if self.tap.on:
            wall = wall_now()
            self._tap(p.name, TAP_UDP, p.query, p.qlen,
                      self.outbuf + (s - self.slots) * self.outsize, outlen, -1, wall - lat, wall)
        if self.cache.max_entries:
            self.c_misses += 1  # its cache lookup (a hand-over is counted by Python)

    cdef void _send_answered(self, int n) noexcept nogil:
        """Send the ANSWERED slots among the first `n` to their clients and free their
        pending entries (they become SENT)."""
        cdef mmsghdr outm[VLEN]
        cdef iovec outv[VLEN]
        cdef int ofd[VLEN]
        cdef mmsghdr tmp
        cdef int i, j, k = 0, fd, m
        cdef Pending *p
        for i in range(n):
            if self.slots[i].verdict != ANSWERED:
                continue
            p = &self.pend[self.slots[i].code]
            outv[k].iov_base = self.outbuf + i * self.outsize
            outv[k].iov_len = self.slots[i].outlen
            memset(&outm[k].msg_hdr, 0, sizeof(msghdr))
            outm[k].msg_hdr.msg_name = p.name
            outm[k].msg_hdr.msg_namelen = p.namelen
            outm[k].msg_hdr.msg_iov = &outv[k]
            outm[k].msg_hdr.msg_iovlen = 1
            ofd[k] = p.fd
            k += 1
        self.fast_answers += k  # before sending, as in _round
        # The answers leave by the listener each client asked on (usually one): one
        # sendmmsg per listener; outm entries move, their iovecs stay where they are.
        i = 0
        while i < k:
            fd = ofd[i]
            m = 0
            for j in range(i, k):
                if ofd[j] == fd:
                    tmp = outm[i + m]
                    outm[i + m] = outm[j]
                    outm[j] = tmp
                    ofd[j] = ofd[i + m]
                    ofd[i + m] = fd
                    m += 1
            _send_all(fd, outm + i, m)
            i += m
        for i in range(n):
            if self.slots[i].verdict == ANSWERED:
                self._pend_free(<int>self.slots[i].code)
                self.slots[i].verdict = SENT

    cdef int _answer(self, const uint8_t *d, uint32_t n, Pending *p, uint8_t *out,
                     uint32_t *outlen, double now, Slot *text) noexcept nogil:
        """Finish an upstream answer (NOERROR/NXDOMAIN, its question ours) as
        `Resolver.answer` does: strip the OPT, inspect CNAME targets and addresses, cache
        (cache.py's TTL rules), and write the client's answer to `out`.
        Returns 1 when Python must finish it instead (a block, anything odd), and 2 when
        the text rules must first pass the targets no domain entry names: they are then
        in `text.host`, and `_answer` is called again with `text` NULL (as it is when the
        lists have no text rules)."""
        cdef uint8_t body[RECV_SIZE]
        cdef uint16_t offs[MAX_RECORDS]
        cdef uint32_t vals[MAX_RECORDS]
        cdef uint8_t secs[MAX_RECORDS]
        cdef uint16_t counts[3]
        cdef uint32_t nrec = 0, pos = p.qend, start, rd, bodyend = n, ttl, rdlen, i
        cdef uint32_t lifetime = 0, minimum = 0, soa_ttl = 0, answers = 0, arkept = 0
        cdef uint16_t rtype
        cdef int sec, j, nl
        cdef bint soa = False, done = False
        cdef bint check = self.inspect and not p.allow and self.core is not None
        cdef char name[256]
        cdef char norm[256]
        cdef Py_ssize_t nn
        cdef long long code
        cdef Entry *e = NULL
        if self.inspect and not p.allow and self.core is None:
            return 1  # the lists changed to a matcher C cannot walk: Python inspects
        if text != NULL:
            text.hostlen = 0
        counts[0] = u16(d + 6)
        counts[1] = u16(d + 8)
        counts[2] = u16(d + 10)
        for sec in range(3):
            for j in range(counts[sec]):
                start = pos
                pos = skip_name(d, n, pos)
                if pos == 0 or pos + 10 > n:
                    return 1
                rtype = u16(d + pos)
                if rtype == TYPE_OPT:
                    bodyend = start  # strip_opt: the OPT and anything after it go
                    done = True
                    break
                ttl = u32(d + pos + 4)
                rdlen = u16(d + pos + 8)
                rd = pos + 10
                if rd + rdlen > n or nrec == MAX_RECORDS:
                    return 1
                offs[nrec] = pos + 4
                vals[nrec] = clean_ttl(ttl)
                secs[nrec] = sec
                nrec += 1
                if sec == 0:
                    answers += 1
                    if check and (rtype == TYPE_CNAME or rtype == TYPE_DNAME):
                        nl = read_name(d, n, rd, name)
                        if nl < 0 or (nl and self.npunt_slots
                                      and self._punted(p.policy, name, nl)):
                            return 1  # odd, or a name Python decides (overrides, policy)
                        if nl:
                            if ip_like(name, nl):
                                return 1  # IP-literal-like targets: Matcher.check in Python
                            nn = normalize_ascii(name, nl, norm)
                            if nn < 0:
                                return 1
                            code = self.core.walk_buf(norm, nn, p.mask)
                            if code >= 0 and not code & 1:
                                return 1  # CNAME cloaking: Python blocks it, with its EDE
                            if code < 0 and text != NULL:
                                if text.hostlen + nn + 1 > HOST_BUF:
                                    return 1
                                memcpy(text.host + text.hostlen, norm, nn)
                                text.host[text.hostlen + nn] = 0
                                text.hostlen += <uint32_t>nn + 1
                    elif check and rtype == TYPE_A and rdlen == 4:
                        nl = snprintf(name, 256, "%u.%u.%u.%u", d[rd], d[rd + 1], d[rd + 2],
                                      d[rd + 3])
                        if self._address_for_python(p, name, nl):
                            return 1
                    elif check and rtype == TYPE_AAAA and rdlen == 16:
                        if memcmp(d + rd, b"\0\0\0\0\0\0\0\0\0\0", 10) == 0:
                            return 1  # mapped/compatible forms: Python's text differs
                        inet_ntop(AF_INET6, d + rd, name, 64)
                        if self._address_for_python(p, name, strlen(name)):
                            return 1
                elif sec == 1 and rtype == TYPE_SOA and not soa:
                    if rdlen < 4:
                        return 1
                    soa = True
                    soa_ttl = vals[nrec - 1]
                    minimum = u32(d + rd + rdlen - 4)
                elif sec == 2:
                    arkept += 1
                pos = rd + rdlen
            if done:
                break
        if text != NULL and text.hostlen:
            return 2
        memcpy(body, d, bodyend)
        if done:
            put16(body + 10, arkept)
        if self.cache.max_entries:
            if (d[3] & 0xF) == 3 or answers == 0:
                # RFC 2308 5: negative answers live for the SOA's TTL/MINIMUM; no SOA, no
                # caching.
                if soa:
                    lifetime = soa_ttl if soa_ttl < minimum else minimum
                    if lifetime > self.negative_max_ttl:
                        lifetime = self.negative_max_ttl
                    for i in range(nrec):
                        if vals[i] > lifetime:
                            vals[i] = lifetime
            else:
                lifetime = self.max_ttl
                for i in range(nrec):
                    if vals[i] < self.min_ttl:
                        vals[i] = self.min_ttl
                    if vals[i] > self.max_ttl:
                        vals[i] = self.max_ttl
                    if secs[i] == 0 and vals[i] < lifetime:
                        lifetime = vals[i]
        if lifetime > 0:
            body[0] = 0
            body[1] = 0
            body[2] &= ~(AA >> 8) & 0xFF  # we answer from a cache, never authoritatively
            for i in range(nrec):
                put32(body + offs[i], vals[i])
            e = self.cache.store_raw(p.key, p.keylen, p.hash, body, bodyend, offs, vals,
                                     nrec, now, lifetime, body, 0)
        if e != NULL:
            outlen[0] = fill(e.body, e.bodylen, e.offsets, e.ttls, e.nttl, 0, p.query, p.qend,
                             p.qflags, p.edns, p.do, p.limit, self.udp_size, body, 0, out)
        else:
            outlen[0] = fill(body, bodyend, offs, vals, 0, 0, p.query, p.qend, p.qflags,
                             p.edns, p.do, p.limit, self.udp_size, body, 0, out)
        return 0

    cdef bint _address_for_python(self, Pending *p, const char *text, int n) noexcept nogil:
        """An answer address (`text`) that a list blocks, or a punt name: Python decides."""
        cdef long long code = self.core.exact_buf(text, n, p.mask)
        return (code >= 0 and not code & 1) or (
            self.npunt_slots != 0 and self._punted(p.policy, text, n))

    def serve_upstream(self, int s, int rounds=8):
        """Read the answers waiting on upstream slot `s` and answer their clients.

        Returns what Python must finish as [(client datagram, host, port, reason,
        listener fd, upstream answer or None, seconds waited)]: R_ANSWER with the answer
        (finish it), R_UPSTREAM with a TC or error-rcode answer, or without one (a closed
        port, an answer longer than the buffer): Python goes on from there.
        """
        cdef list rest = None
        cdef int r, i, n, idx
        for r in range(rounds):
            with nogil:
                n = self._uround(s, mono_now())
            if n == -2:
                # The upstream's port is closed (ICMP): all that waits on this socket goes
                # to Python at once, which fails over, instead of timing out.
                if rest is None:
                    rest = []
                self._waiting_on(s, rest)
                break
            if n <= 0:
                break
            if self.text_rules:
                self._text_checks_answers(n)
            for i in range(n):
                if self.slots[i].verdict != TO_PYTHON:
                    continue
                idx = <int>self.slots[i].code
                if rest is None:
                    rest = []
                rest.append(self._hand_over(
                    idx, self.slots[i].reason,
                    PyBytes_FromStringAndSize(<char *>self.inbuf + i * RECV_SIZE,
                                              self.slots[i].inlen)
                    if self.slots[i].inlen else None))
                self.python_fallbacks += 1
            if n < VLEN:
                break
        return rest if rest is not None else _NOTHING

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
            if self.text_rules:
                self._text_checks(n)
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
        host, port = host_port(s.name)
        return (PyBytes_FromStringAndSize(<char *>self.inbuf + i * RECV_SIZE, s.inlen),
                host, port, s.reason, s.code)

    def counters(self, bint reset=True):
        """The per-query counters since the last call, for the metrics flush:
        {"cached": {(qtype, transport): n}, "blocked": {...}, "allowed": {...} (forwarded
        from C, and ANY), "blocks": {metric index: n}, "latency": [n per bucket], "latency_sum": s,
        "cache_hits": n, "cache_misses": n, "upstream": [per upstream set: {"queries": n,
        "latency": [n per bucket], "latency_sum": s, "spoofed": n, "garbage": n}]}.
        qtype 65535 stands for every code above 255 (metrics label it "other")."""
        cdef int i
        out = {
            "cached": _by_qtype(&self.c_cached[0][0]),
            "blocked": _by_qtype(&self.c_blocked[0][0]),
            "allowed": _by_qtype(&self.c_allowed[0][0]),
            "blocks": {i: self.c_blocks[i] for i in range(MAX_BLOCK_KEYS) if self.c_blocks[i]},
            "latency": [self.c_latency[i] for i in range(NBUCKETS)],
            "latency_sum": self.c_latency_sum,
            "cache_hits": self.c_hits,
            "cache_misses": self.c_misses,
            "upstream": [{
                "queries": self.c_up_queries[u],
                "latency": [self.c_up_latency[u][i] for i in range(NBUCKETS)],
                "latency_sum": self.c_up_latency_sum[u],
                "spoofed": self.c_up_spoofed[u],
                "garbage": self.c_up_garbage[u],
            } for u in range(MAX_USETS)],
        }
        if reset:
            memset(self.c_allowed, 0, sizeof(self.c_allowed))
            memset(self.c_up_latency, 0, sizeof(self.c_up_latency))
            memset(self.c_up_latency_sum, 0, sizeof(self.c_up_latency_sum))
            memset(self.c_up_queries, 0, sizeof(self.c_up_queries))
            memset(self.c_up_spoofed, 0, sizeof(self.c_up_spoofed))
            memset(self.c_up_garbage, 0, sizeof(self.c_up_garbage))
            memset(self.c_cached, 0, sizeof(self.c_cached))
            memset(self.c_blocked, 0, sizeof(self.c_blocked))
            memset(self.c_blocks, 0, sizeof(self.c_blocks))
            memset(self.c_latency, 0, sizeof(self.c_latency))
            self.c_latency_sum = 0
            self.c_hits = 0
            self.c_misses = 0
        return out

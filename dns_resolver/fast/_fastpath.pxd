# What C sees of the UDP fast path (dns_resolver/fast/_fastpath.pyx): the query pipeline (ACL,
# policy, cache, blocks) and the UDP loop with its forwarding.
cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from dns_resolver.fast._blocks cimport MAX_BLOCK_KEYS, BlockAnswers
from dns_resolver.fast._cache cimport MAX_KEY, MAX_RECORDS, AnswerCache, Entry
from dns_resolver.fast._clientids cimport ClientIds
from dns_resolver.fast._net cimport Net, in_net
from dns_resolver.fast._observed cimport Observed
from dns_resolver.fast._querylog cimport LogBuffer
from dns_resolver.fast._ratelimit cimport RateLimiter
from dns_resolver.fast._subtable cimport SubscriberTable, sub_header
from dns_resolver.fast._tapbuf cimport TapBuffer
from filtercore._table cimport MatchCore


cdef enum:
    VLEN = 64              # datagrams per recvmmsg/sendmmsg (32-64 measured best)
    RECV_SIZE = 4096       # receive buffer per datagram; longer queries are dropped
    NQTYPE = 257           # per-qtype counters: codes 0-255, then "other"
    NBUCKETS = 19          # latency histogram buckets (metrics.LATENCY_BUCKETS + Inf)
    MAX_POLICIES = 64
    MAX_PENDING = 4096     # upstream queries in flight from C; beyond, misses go to Python
    MAX_USOCK = 128        # upstream sockets of all sets, taking queries or draining
    QUERY_KEEP = 512       # client queries up to this size can be forwarded from C
    FWD_SIZE = 523         # an upstream query: up to QUERY_KEEP of question + our OPT
    HOST_BUF = 1024        # names per slot for the text rules (more: Python)
    T_UDP = 0              # transports, for _one and the counters
    T_TCP = 1
    T_TLS = 2              # DoT from the stream loop: TCP's limits, counted as tls
    T_HTTPS = 3            # DoH from the stream loop: the same, counted as https
    NTRANSPORT = 4
    MAX_USETS = 16         # upstream sets C forwards to: the default (0) and rules' sets


# Slot verdicts and the reasons a query goes to Python (exported for tests and metrics).
cdef enum:
    ANSWERED = 0
    TO_PYTHON = 1
    DROPPED = 2
    FORWARD = 3         # sent upstream from C (slot.code: the pending index)
    TEXT_CHECK = 4      # held until the text rules pass the names in slot.host
    SENT = 5            # an upstream answer's client was answered: nothing left to do

cdef enum:
    R_MISS = 0          # not cached, not blocked: the upstream is needed
    R_ODD = 1           # a query the fast path does not parse (opcode, counts, OPT, names)
    R_REFUSE = 2        # not allowed by the ACL: Python answers REFUSED
    R_NEW_BLOCK = 3     # blocked by a rule whose EDE is not memoised yet
    R_POLICY = 4        # the client's policy needs the Python chain
    R_STALE = 5         # expired or due for prefetch: Python's cache rules decide
    R_TIMEOUT = 6       # C's upstream query timed out: Python asks again (failover)
    R_UPSTREAM = 7      # TC, an error rcode, a refused port: Python asks again
    R_ANSWER = 8        # an upstream answer C does not finish (blocks, odd records)


cdef struct Pending:
    # A client query forwarded upstream from C, until its answer or timeout.
    double started         # when the client's batch was received
    double sent
    double sent_wall       # the same, wall clock (dnstap's forwarder messages only)
    uint64_t hash          # of the cache key
    int fd                 # the listener the client asked on (the answer leaves by it)
    int usock              # upstream socket slot; -1 when the entry is free
    uint16_t uid           # our ID upstream
    uint16_t qflags
    uint16_t qtype
    uint8_t edns
    uint8_t do
    uint8_t allow          # allowed by a list entry: no answer inspection (as Python)
    uint8_t policy
    uint8_t uset           # the upstream set it was sent to
    uint64_t mask          # the policy's categories, for inspecting the answer
    uint32_t limit         # the client's UDP size
    uint32_t keylen
    uint32_t qlen          # the client's datagram
    uint32_t qend          # end of its question
    uint32_t namelen
    uint8_t key[MAX_KEY]
    uint8_t query[QUERY_KEEP]
    uint8_t name[128]      # the client's sockaddr


cdef struct USock:
    # One connected upstream socket: its port is the random source port of its queries.
    int fd                 # -1: slot unused
    bint active            # takes new queries (else draining until its answers are in)
    int uset               # the upstream set whose first candidate it is connected to
    uint32_t inflight
    uint32_t used          # queries sent through it
    uint16_t *ids          # our ID -> pending index + 1 (0: none), 65536 entries


cdef struct Slot:
    # One datagram of a batch and what the fast path made of it.
    int verdict            # ANSWERED, TO_PYTHON, DROPPED, FORWARD, TEXT_CHECK, SENT
    int result             # for the query log: L_CACHED, L_BLOCKED
    int metric             # for the query log: the block's (category, list) index
    uint16_t qtype
    int reason             # why it goes to Python (R_* in the .pyx)
    int64_t code           # the walk code (R_NEW_BLOCK) or the pending index (FORWARD)
    int fd                 # where an answer to an upstream answer goes (the listener)
    uint32_t outlen
    uint32_t inlen
    uint32_t namelen
    uint8_t name[128]      # the client's sockaddr (a sockaddr_storage)
    uint32_t hostlen
    uint8_t *host          # TEXT_CHECK: normalised names for the text rules, NUL-ended
                           # (HOST_BUF bytes in FastPath.hosts: the hot fields stay close)


@cython.final
cdef class FastPath:
    cdef MatchCore core
    cdef object text_check # the lists' text rules (set_matcher), or None
    cdef bint text_rules   # text_check is not None
    cdef int udp_size
    cdef uint64_t k0, k1   # the punt names' hash key
    cdef AnswerCache cache
    cdef BlockAnswers blocks
    cdef LogBuffer log     # the query log's lines (set_querylog)
    cdef TapBuffer tap     # dnstap frames (set_dnstap)
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
    cdef ClientIds ids      # ClientIDs -> policies (None: no policy lists any)
    # Bumped by every change of the policies: a stream connection that resolved its
    # ClientID once (client_id_policy) resolves it again when this moved.
    cdef readonly uint32_t policy_gen
    cdef uint64_t *punt     # hashes of (policy, name): names at or below go to Python
    cdef uint64_t npunt_slots
    # forwarding rules (set_routes): hashes of (policy, domain) -> upstream set, or -1 for
    # a locally served zone (Python answers it); most specific domain first
    cdef uint64_t *route_h
    cdef int8_t *route_v
    cdef uint64_t nroute_slots
    cdef int8_t root_set[MAX_POLICIES]  # the set of names no rule names, per policy (-1: Python)
    # forwarding misses upstream (set_upstream); pend/usock are owned by Python's pool
    cdef bint forwarding
    cdef bint inspect
    cdef bint expired_to_python # serve-stale or prefetch: Python's cache rules decide expiry
    cdef uint16_t up_udp_size
    cdef double up_timeout
    cdef uint32_t min_ttl, max_ttl, negative_max_ttl
    cdef Pending *pend
    cdef int32_t *free_pend
    cdef int nfree
    cdef readonly int inflight
    cdef USock usock[MAX_USOCK]
    cdef int nusock        # slots below this may be in use (the round-robin's span)
    cdef int ucur[MAX_USETS]
    cdef double last_expiry
    cdef uint8_t rnd[4096]
    cdef int rndpos
    cdef uint8_t *fwdbuf
    # newly observed domains (set_observe, issue 17): miss names and client networks
    # (masked here: addresses never leave C) go to the Observed filters
    cdef Observed observed
    cdef int obs_v4, obs_v6    # network prefixes kept of a client address
    # counters, read and zeroed by counters()
    cdef uint64_t c_cached[NTRANSPORT][NQTYPE]
    cdef uint64_t c_blocked[NTRANSPORT][NQTYPE]
    cdef uint64_t c_latency[NBUCKETS]
    cdef double c_latency_sum
    cdef uint64_t c_blocks[MAX_BLOCK_KEYS]
    cdef uint64_t c_allowed[NTRANSPORT][NQTYPE]
    cdef uint64_t c_up_latency[MAX_USETS][NBUCKETS]
    cdef double c_up_latency_sum[MAX_USETS]
    cdef uint64_t c_up_queries[MAX_USETS]
    cdef uint64_t c_up_spoofed[MAX_USETS]
    cdef uint64_t c_up_garbage[MAX_USETS]
    cdef uint64_t up_answered[MAX_USETS]  # answers matched per set, for health (answered())
    cdef uint64_t c_hits, c_misses
    cdef readonly uint64_t fast_answers, python_fallbacks, batches, datagrams
    # batch buffers
    cdef uint8_t *inbuf
    cdef uint8_t *outbuf
    cdef uint8_t *hosts    # VLEN x HOST_BUF, behind Slot.host
    cdef int outsize
    cdef Slot slots[VLEN]
    # rate limits per client network (set_ratelimit), shared with the Python chain
    cdef RateLimiter limiter
    cdef bint limiting

    # subscribers' serving table (or None: the mapping stays alive with it)
    cdef SubscriberTable subs_table
    cdef const sub_header *subs
    cdef void _tap(self, const void *sa, int protocol, const uint8_t *q, uint32_t qlen,
                   const uint8_t *r, uint32_t rlen, int edeidx, double qwall,
                   double rwall) noexcept nogil
    cdef void _count_latency(self, uint64_t k, double lat) noexcept nogil
    cdef int _pend_new(self) noexcept nogil
    cdef void _pend_free(self, int idx) noexcept nogil
    cdef void _detach(self, int idx) noexcept nogil
    cdef object _hand_over(self, int idx, int reason, object answer)
    cdef int _waiting_on(self, int s, list rest) except -1
    cdef bint _address_for_python(self, Pending *p, const char *text, int n) noexcept nogil
    cdef uint16_t _random16(self) noexcept nogil
    cdef int _send_upstream(self, int uset, int *idx, int k) noexcept nogil
    cdef void _forward(self, int *fwd, int *fslot, int nf) noexcept nogil
    cdef void _text_checks(self, int n)
    cdef bint _text_hit(self, Slot *s, uint64_t mask)
    cdef void _text_checks_answers(self, int n)
    cdef void _answered(self, Slot *s, Pending *p, uint32_t outlen) noexcept nogil
    cdef void _send_answered(self, int n) noexcept nogil
    cdef int _answer(self, const uint8_t *d, uint32_t n, Pending *p, uint8_t *out,
                     uint32_t *outlen, double now, Slot *text) noexcept nogil
    cdef int _uround(self, int s, double now) noexcept nogil
    cdef int _policy_of(self, int family, const uint8_t *addr) noexcept nogil
    # The policy ClientID `cid` (`n` bytes, lower case: the TLS server name's label or the
    # DoH path segment) selects for a client at sockaddr `sa`, to pass to `_one` as
    # `id_policy`; -1: none (unknown, outside its policy's client_id_networks, or no
    # policies): the address decides. Depends only on (cid, address, policy_gen).
    cdef int client_id_policy(self, const char *cid, uint32_t n, const void *sa) noexcept nogil
    cdef int _subscriber_policy(self, int family, const uint8_t *addr) noexcept nogil
    cdef bint _punted(self, int policy, const char *name, uint32_t n) noexcept nogil
    cdef int _route(self, int policy, const char *name, uint32_t n) noexcept nogil
    cdef bint _allowed(self, int family, const uint8_t *addr) noexcept nogil
    cdef void _observe(self, const uint8_t *name, uint32_t namelen, int family,
                       const uint8_t *addr, double now) noexcept nogil
    cdef bint _limited(self, const uint8_t *d, uint32_t n, const void *sa, uint8_t *out,
                       Slot *slot, double now, bint tcp) noexcept nogil
    cdef uint32_t _any_answer(self, const uint8_t *d, uint32_t qend, uint16_t qflags,
                              uint16_t qclass, bint edns, bint do, uint8_t *out) noexcept nogil
    cdef void _one(self, const uint8_t *d, uint32_t n, const void *sa, uint8_t *out,
                   Slot *slot, double now, int transport, int id_policy=*) noexcept nogil
    cdef int _round(self, int fd) noexcept nogil
    cdef object _handoff(self, int i)


cdef tuple host_port(const uint8_t *name)  # (host text, port) of a sockaddr_in/_in6

# What C sees of the stream loop (dns_resolver/fast/_stream.pyx): DNS over TCP connections;
# DoH's loop (_doh.pyx) extends it.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport realloc

from dns_resolver.fast._fastpath cimport FastPath
from dns_resolver.fast._tls cimport LABEL_MAX, SSL, SSL_CTX, TlsContext, TlsNames


cdef struct Conn:
    # One client connection; its slot is reused once it is closed (`gen` tells them apart).
    int fd                 # -1: the slot is free, or lingering
    int linger_fd          # -1, or the socket of a closed connection read out (lingering)
    int listener           # index in StreamLoop.lfd
    uint32_t gen           # bumped when the slot is freed: late answers are dropped
    uint32_t inflight      # queries handed to Python, not answered yet
    uint32_t events        # the epoll interest set now
    bint closing           # EOF, garbage or Python's word: no more reading, closed when flushed
    bint queued            # on the resume list
    double deadline        # CLOCK_MONOTONIC: closed when passed (idle, or not reading answers)
    uint8_t *inb           # received bytes: frames from inpos to inlen
    uint32_t inpos, inlen, incap
    uint8_t *outb          # answers to send: from outpos to outlen
    size_t outpos, outlen, outcap
    uint8_t name[128]      # the peer's sockaddr
    SSL *ssl               # DoT: the connection's TLS (NULL on plain TCP)
    bint hs                # DoT: the handshake is not done yet
    bint wantw             # DoT: TLS waits for the socket to be writable
    char cid[LABEL_MAX]    # DoT: the ClientID of the server name ("" for none)
    int idpol              # DoT: the policy the ClientID selects (-1: the address decides)
    uint32_t idgen         # ... as of this FastPath.policy_gen
    void *http             # DoH: the connection's HTTP state (_doh.pyx; NULL until it speaks)


cdef inline bint out_room(Conn *c, size_t need) noexcept nogil:
    """Grow `c`'s unsent bytes' buffer to hold `need` bytes. False when out of memory."""
    cdef size_t cap
    cdef uint8_t *grown
    if need > c.outcap:
        cap = c.outcap * 2 if c.outcap else 4096
        while cap < need:
            cap *= 2
        grown = <uint8_t *>realloc(c.outb, cap)
        if grown == NULL:
            return False
        c.outb = grown
        c.outcap = cap
    return True


cdef struct Handoff:
    # A query for Python: (connection id, a copy of the query, reason, walk code).
    uint64_t cid
    uint8_t *query
    uint32_t len
    int reason
    int64_t code
    uint8_t name[128]      # the peer's sockaddr
    char name_id[LABEL_MAX]  # the connection's ClientID ("" for none)
    int32_t stream         # DoH: the HTTP/2 stream (0: none)
    char *head             # DoH: a request for Python's HTTP handling (NULL: a DNS query)


cdef class StreamLoop:
    cdef FastPath fp
    cdef readonly int fileno       # the epoll set: the event loop watches it
    cdef double idle
    cdef uint32_t max_conns        # per listener
    cdef uint32_t max_inflight     # per connection
    cdef int *lfd                  # listening sockets (owned by Python)
    cdef uint32_t *lconns          # open connections per listener
    cdef int nlisteners
    cdef Conn *conns
    cdef uint32_t nslots
    cdef uint32_t *free_slots
    cdef uint32_t nfree
    cdef uint32_t *resume          # connections with frames held back (in-flight limit)
    cdef uint32_t nresume
    cdef Handoff *ho
    cdef uint32_t nho, capho
    cdef uint8_t *scratch          # one answer, before it is framed into a connection
    cdef bint accept_paused        # a listener is not watched: out of descriptors
    cdef uint32_t nlinger          # closed connections lingering (see _close)
    cdef readonly uint64_t accepted, refused, closed_idle, closed_garbage
    # DoT (set_tls): every listener speaks TLS with this context.
    cdef TlsContext tls
    cdef SSL_CTX *ctx
    cdef TlsNames names
    cdef double hs_timeout
    cdef bint padding
    cdef const char *tname         # the query log's protocol
    cdef int tap_proto             # dnstap's SocketProtocol
    cdef int transport             # for FastPath._one: T_TCP or T_TLS
    cdef readonly uint64_t handshakes_full, handshakes_resumed, handshakes_failed
    cdef readonly uint64_t handshake_timeouts

    cdef void _accept(self, int li, double now) noexcept nogil
    cdef bint _grow(self) noexcept nogil
    cdef void _close(self, uint32_t s) noexcept nogil
    cdef void _release(self, uint32_t s) noexcept nogil
    cdef void _drain(self, uint32_t s) noexcept nogil
    cdef void _arm(self, uint32_t s) noexcept nogil
    cdef bint _read(self, uint32_t s, double now) noexcept nogil
    cdef bint _read_tls(self, uint32_t s, double now) noexcept nogil
    cdef bint _handshake(self, uint32_t s, double now) noexcept nogil
    cdef void _frames(self, uint32_t s, double now) noexcept nogil
    cdef bint _flush(self, uint32_t s) noexcept nogil
    cdef bint _append(self, Conn *c, const uint8_t *d, uint32_t n) noexcept nogil
    cdef bint _hand(self, uint32_t s, const uint8_t *q, uint32_t n, int reason,
                    int64_t code) noexcept nogil
    cdef void _eof(self, uint32_t s) noexcept nogil
    cdef size_t _unsent(self, uint32_t s) noexcept nogil
    cdef object _item(self, Handoff *h)

# cython: language_level=3
"""dnstap frames written in C for the client exchanges C answers (the encoding is in
_dnstap.h; dns_resolver/observability/dnstap.py sends them), into a buffer Python drains
(`take`)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset, strlen

from dns_resolver.fast._wire cimport (AF_INET6, client_of, inet_ntop, ntohs, skip_name,
                                     sockaddr_in, u16)

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil

cdef extern from "_dnstap.h" nogil:
    ctypedef struct fd_tap_msg:
        int type
        int family
        int protocol
        int peer
        const uint8_t *addr
        size_t addrlen
        uint32_t port
        uint64_t qsec
        uint32_t qnsec
        const uint8_t *query
        size_t querylen
        uint64_t rsec
        uint32_t rnsec
        const uint8_t *response
        size_t responselen
        const uint8_t *rule
        size_t rulelen
        int action
        const uint8_t *value
        size_t valuelen
    size_t fd_tap_frame(uint8_t *out, size_t room, const uint8_t *prefix, size_t prefixlen,
                        const fd_tap_msg *m)


cdef class TapBuffer:
    """Off until `configure`."""

    def __dealloc__(self):
        free(self.buf)

    def configure(self, bint query, bint response, int anonymize, bytes key, bytes prefix,
                  size_t capacity, bint forwarder_query=False, bint forwarder_response=False):
        """Write frames for every client exchange answered in C into a buffer of
        `capacity` bytes (the first call sizes it) that `take` drains; frames that do not
        fit are counted in `dropped`.

        Args:
            query, response: write CLIENT_QUERY, CLIENT_RESPONSE.
            forwarder_query, forwarder_response: write FORWARDER_QUERY and
                FORWARDER_RESPONSE for the queries C forwards (to the `set_peer` upstream).
            anonymize: as the query log's: 0 truncate, 1 hash (keyed with `key`), 2 none.
            prefix: the encoded `Dnstap.identity` and `.version` fields.
        """
        if len(key) != 16 or len(prefix) > sizeof(self.prefix):
            raise ValueError("dnstap: a 16-byte key and at most 512 bytes of prefix")
        if self.buf == NULL:
            self.buf = <uint8_t *>malloc(capacity)
            if self.buf == NULL:
                raise MemoryError()
            self.cap = capacity
        memcpy(self.prefix, PyBytes_AS_STRING(prefix), len(prefix))
        self.prefixlen = len(prefix)
        self.anon = anonymize
        self.k0 = int.from_bytes(key[:8], "little")
        self.k1 = int.from_bytes(key[8:], "little")
        self.query = query
        self.response = response
        self.on = query or response
        self.fwd_query = forwarder_query
        self.fwd_response = forwarder_response
        self.fwd_on = forwarder_query or forwarder_response

    def set_peer(self, int peer, int family, bytes address, int port, int protocol):
        """The upstream C forwards upstream set `peer`'s queries to, as forwarder messages
        name it: SocketFamily `family`, `address` packed (4 or 16 bytes, or empty: not an
        address), `port`, SocketProtocol `protocol`."""
        if len(address) not in (0, 4, 16):
            raise ValueError("dnstap: an upstream address is 4 or 16 bytes")
        if not 0 <= peer < TAP_PEERS:
            raise ValueError(f"dnstap: upstream set {peer} is not 0..{TAP_PEERS - 1}")
        self.peer_family[peer] = family
        memcpy(self.peer_addr[peer], PyBytes_AS_STRING(address), len(address))
        self.peer_addrlen[peer] = len(address)
        self.peer_port[peer] = port
        self.peer_protocol[peer] = protocol

    def take(self):
        """(frames written since the last call, back to back; how many)."""
        cdef bytes out
        cdef uint64_t n = self.count
        if self.len == 0:
            return b"", 0
        out = PyBytes_FromStringAndSize(<char *>self.buf, self.len)
        self.len = 0
        self.count = 0
        return out, n

    cdef void write(self, const void *sa, int protocol, const uint8_t *q, uint32_t qlen,
                    const uint8_t *r, uint32_t rlen, const uint8_t *ede, uint32_t edelen,
                    double qwall, double rwall) noexcept nogil:
        """CLIENT_QUERY and CLIENT_RESPONSE frames for query `q` answered with `r`; a
        block (its EDE option in `ede`) carries its Policy: the EDE text as the rule."""
        cdef fd_tap_msg m
        cdef int family
        cdef const uint8_t *addr
        cdef uint8_t packed[16]
        cdef char text[64]
        cdef uint64_t h
        cdef uint32_t qend, ancount
        cdef int i
        if client_of(sa, &family, &addr) < 0:
            return
        memset(&m, 0, sizeof(m))
        m.family = 1 if family == 4 else 2
        m.addrlen = 4 if family == 4 else 16
        m.protocol = protocol
        memcpy(packed, addr, m.addrlen)
        # querylog's anonymize modes, as dnstap.tap_address does them.
        if self.anon == 0:
            memset(packed + (3 if family == 4 else 6), 0, m.addrlen - (3 if family == 4 else 6))
        elif self.anon == 1:
            if family == 4:
                snprintf(text, 64, "%u.%u.%u.%u", addr[0], addr[1], addr[2], addr[3])
            else:
                inet_ntop(AF_INET6, addr, text, 64)
            h = fc_siphash24(self.k0, self.k1, <const unsigned char *>text, strlen(text))
            memset(packed, 0, 16)
            for i in range(4 if family == 4 else 8):
                packed[i] = (h >> (56 - 8 * i)) & 0xFF
        m.addr = packed
        m.port = ntohs((<const sockaddr_in *>sa).sin_port)  # same offset in sockaddr_in6
        m.qsec = <uint64_t>qwall
        m.qnsec = <uint32_t>((qwall - <double>m.qsec) * 1e9)
        if self.query:
            m.type = 5
            m.query = q
            m.querylen = qlen
            _emit(self, &m)
        if not self.response:
            return
        m.type = 6
        m.query = NULL
        m.querylen = 0
        m.rsec = <uint64_t>rwall
        m.rnsec = <uint32_t>((rwall - <double>m.rsec) * 1e9)
        m.response = r
        m.responselen = rlen
        if ede != NULL and edelen > 6 and rlen >= 12:
            # The EDE option: code, length, info code, then the text ("blocked: ...").
            m.rule = ede + 6
            m.rulelen = edelen - 6
            if m.rulelen >= 9 and memcmp(m.rule, b"blocked: ", 9) == 0:
                m.rule += 9
                m.rulelen -= 9
            ancount = u16(r + 6)
            m.action = 1 if (r[3] & 0xF) == 3 else (6 if ancount else 2)
            qend = skip_name(q, qlen, 12)
            if qend:
                m.value = q + 12
                m.valuelen = qend - 12
        _emit(self, &m)

    cdef void forward(self, int peer, bint response, const uint8_t *m, uint32_t mlen,
                      double qwall, double rwall) noexcept nogil:
        """A FORWARDER_QUERY (query `m` sent at `qwall`) or FORWARDER_RESPONSE (answer `m`
        received at `rwall`) frame of an exchange with upstream set `peer`'s `set_peer`
        upstream."""
        cdef fd_tap_msg t
        if not (self.fwd_response if response else self.fwd_query):
            return
        memset(&t, 0, sizeof(t))
        t.type = 8 if response else 7
        t.family = self.peer_family[peer]
        t.protocol = self.peer_protocol[peer]
        t.peer = 1
        t.addr = self.peer_addr[peer]
        t.addrlen = self.peer_addrlen[peer]
        t.port = self.peer_port[peer]
        t.qsec = <uint64_t>qwall
        t.qnsec = <uint32_t>((qwall - <double>t.qsec) * 1e9)
        if response:
            t.rsec = <uint64_t>rwall
            t.rnsec = <uint32_t>((rwall - <double>t.rsec) * 1e9)
            t.response = m
            t.responselen = mlen
        else:
            t.query = m
            t.querylen = mlen
        _emit(self, &t)


cdef inline void _emit(TapBuffer tap, fd_tap_msg *m) noexcept nogil:
    """Append `m`'s frame to `tap`'s buffer, or count it dropped when it does not fit."""
    cdef size_t n = fd_tap_frame(tap.buf + tap.len, tap.cap - tap.len, tap.prefix,
                                 tap.prefixlen, m)
    if n == 0:
        tap.dropped += 1
    tap.len += n
    tap.count += n != 0

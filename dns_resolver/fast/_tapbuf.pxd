# What C sees of the dnstap frame buffer (dns_resolver/fast/_tapbuf.pyx).
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef enum:
    TAP_UDP = 1            # dnstap SocketProtocol
    TAP_TCP = 2
    TAP_DOT = 3
    TAP_DOH = 4
    TAP_PEERS = 16         # upstream sets C forwards to (_fastpath.pxd's MAX_USETS)


@cython.final
cdef class TapBuffer:
    cdef readonly bint on  # CLIENT_QUERY or CLIENT_RESPONSE frames wanted
    cdef bint query, response
    cdef readonly bint fwd_on  # FORWARDER_QUERY or FORWARDER_RESPONSE frames wanted
    cdef bint fwd_query, fwd_response
    # The upstream C forwards to, per upstream set (set_peer).
    cdef int peer_family[TAP_PEERS]
    cdef int peer_protocol[TAP_PEERS]
    cdef uint8_t peer_addr[TAP_PEERS][16]
    cdef size_t peer_addrlen[TAP_PEERS]
    cdef uint32_t peer_port[TAP_PEERS]
    cdef int anon          # as the query log's: truncate, hash, none
    cdef uint64_t k0, k1
    cdef uint8_t *buf
    cdef size_t len, cap
    cdef uint64_t count
    cdef readonly uint64_t dropped
    cdef uint8_t prefix[512]  # Dnstap.identity and .version, encoded
    cdef size_t prefixlen

    cdef void write(self, const void *sa, int protocol, const uint8_t *q, uint32_t qlen,
                    const uint8_t *r, uint32_t rlen, const uint8_t *ede, uint32_t edelen,
                    double qwall, double rwall) noexcept nogil
    cdef void forward(self, int peer, bint response, const uint8_t *m, uint32_t mlen,
                      double qwall, double rwall) noexcept nogil

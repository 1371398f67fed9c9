# What C sees of the ClientID table (dns_resolver/fast/_clientids.pyx): ClientIDs of encrypted
# transports (the TLS server name's label, the DoH path segment) -> policy index.
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from dns_resolver.fast._net cimport Net


cdef enum:
    CLIENT_ID_MAX = 64     # a ClientID (one DNS label) with its NUL
    MAX_ID_POLICIES = 64   # as _fastpath's MAX_POLICIES


cdef struct IdSlot:
    uint64_t h             # of the ClientID; 0: free
    int policy
    char id[CLIENT_ID_MAX]


@cython.final
cdef class ClientIds:
    cdef IdSlot *slots
    cdef uint64_t nslots           # a power of two, or 0 when the table is empty
    cdef uint64_t k0, k1
    cdef Net *nets                 # client_id_networks (value: the policy index)
    cdef int nnets
    cdef bint bound[MAX_ID_POLICIES]  # the policy's ClientIDs count only from its nets
    cdef readonly uint32_t count

    cdef int lookup(self, const char *cid, uint32_t n, int family,
                    const uint8_t *addr) noexcept nogil

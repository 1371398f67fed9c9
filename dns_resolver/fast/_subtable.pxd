# The subscribers' serving table as C sees it (dns_resolver/fast/_subtable.h).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef extern from "_subtable.h" nogil:
    ctypedef struct sub_header:
        uint64_t magic
        uint64_t seq
        uint64_t capacity
        uint64_t count
        uint32_t v6_lengths
        uint32_t retired
        uint64_t changes
    int sub_lookup(const sub_header *h, int family, const uint8_t *addr, uint32_t *lists)


cdef class SubscriberTable:
    cdef sub_header *header
    cdef size_t size
    cdef int fd
    cdef readonly bint writable
    cdef readonly str path

# What C sees of newly observed domains (dns_resolver/fast/_observed.pyx): the registrable domain
# by the Public Suffix List, two rotating Bloom filters, and the records Python takes.
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef enum:
    OBS_NEW = 1            # a record's kind: the domain is in neither filter
    OBS_WATCHED = 2        # ... a candidate's later query (its networks are counted)
    OBS_HEADER = 20        # family, network (16), name length, domain offset, kind
    WATCH_PROBES = 8       # slots a candidate may take in the watch table


cdef struct Watch:
    uint64_t h             # the domain's hash; 0: free
    double until           # the end of its lead window
    uint32_t budget        # records still to send


@cython.final
cdef class Observed:
    cdef readonly uint64_t bits
    cdef readonly uint64_t capacity
    cdef readonly int hashes
    cdef readonly double window
    cdef uint8_t *current
    cdef uint8_t *previous
    cdef readonly uint64_t count      # domains in the current filter
    cdef readonly uint64_t rotations
    cdef double rotated_at
    cdef uint64_t k0, k1
    cdef uint64_t *known              # recently asked known domains (direct-mapped hashes)
    cdef Watch *watch                 # candidates whose queries still go to Python
    cdef uint64_t watch_mask
    cdef double watch_seconds
    cdef uint32_t budget
    cdef uint8_t *buf                 # records for Python (take)
    cdef size_t len, cap
    cdef readonly uint64_t noted      # misses seen
    cdef readonly uint64_t dropped    # records that did not fit

    cdef uint64_t _hash(self, const uint8_t *s, size_t n) noexcept nogil
    cdef void _rotate(self, double now) noexcept nogil
    cdef int _add(self, uint64_t h, double now) noexcept nogil
    cdef void note(self, const uint8_t *name, uint32_t namelen, const uint8_t *network,
                   double now) noexcept nogil

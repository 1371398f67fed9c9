# What C sees of the query log buffer (dns_resolver/fast/_querylog.pyx).
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


# What the query log says of a query answered in C (`result` in querylog.py).
cdef enum:
    L_CACHED = 0
    L_BLOCKED = 1
    L_ALLOWED = 2
    L_LIMITED = 3       # over the rate limit, the first time this second for its network
    L_QUIET = -1        # over the rate limit again within the second: no line


@cython.final
cdef class LogBuffer:
    cdef readonly bint on  # set_querylog and not stop_querylog
    cdef int anon          # index in config.ANONYMIZE_MODES: truncate, hash, none
    cdef uint64_t k0, k1
    cdef char *buf
    cdef size_t len, cap
    cdef readonly uint64_t dropped
    cdef long sec
    cdef char stamp[32]
    cdef char **qtype_json   # 65536 JSON strings (NULL: the number is written)
    cdef char **block_json   # per block metric index: "category":..,"list":..

    cdef void write(self, const void *sa, const uint8_t *q, uint32_t qlen, uint16_t qtype,
                    int result, int metric, double duration, double wall,
                    const char *protocol) noexcept nogil

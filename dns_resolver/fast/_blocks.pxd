# What C sees of the block answers (dns_resolver/fast/_blocks.pyx): the templates and the
# memoised EDE options by (rule, policy). The EDE lookup runs once per block: inline here.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    MAX_BLOCK_KEYS = 4096  # (category, list) pairs counted in C
    MAX_EDE = 32768        # memoised EDE options (per rule and policy) before a reset
    EDE_SLOTS = 65536      # open addressing, twice MAX_EDE


cdef struct Template:
    # A block answer after the question: header fields and the records.
    uint16_t rcode
    uint16_t an
    uint16_t ns
    uint32_t reclen
    uint8_t *rec


@cython.final
cdef class BlockAnswers:
    cdef Template tmpl[3]  # A, AAAA, anything else
    cdef readonly bint ready  # the templates are set
    cdef int64_t *ede_keys
    cdef int32_t *ede_vals
    cdef uint8_t **ede_opts
    cdef uint32_t *ede_lens
    cdef uint16_t *ede_metric
    cdef int nede

    cdef uint32_t write(self, int idx, const uint8_t *d, uint32_t qend, uint16_t qflags,
                        uint16_t qtype, uint16_t qclass, bint edns, bint do, uint32_t limit,
                        int udp_size, uint8_t *out) noexcept nogil


cdef inline int ede_find(BlockAnswers b, int64_t key) noexcept nogil:
    """The memo index of the EDE of a block by `key` (rule code | policy << 56), or -1."""
    cdef uint64_t i = (<uint64_t>key * 0x9E3779B97F4A7C15ULL) >> 48
    while b.ede_keys[i] != -1:
        if b.ede_keys[i] == key:
            return b.ede_vals[i]
        i = (i + 1) & (EDE_SLOTS - 1)
    return -1

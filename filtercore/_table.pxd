# What C sees of the hashed domain table, for the DNS fast path to cimport.
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    # Per-group flags: which names an entry covers, and with what action.
    G_ALLOW_SELF = 1
    G_ALLOW_BELOW = 2
    G_BLOCK_SELF = 4
    G_BLOCK_BELOW = 8
    # Per-key bit in `groups`: some listed name lies below this one, so a walk from the
    # TLD must go on; without it the walk stops here.
    HAS_CHILDREN = 0x8000
    GROUP_MASK = 0x7fff
    MAX_NAME = 253


cdef struct TableView:
    const uint64_t *keys     # sorted ascending
    const uint16_t *groups   # group id | HAS_CHILDREN, parallel to keys
    const uint32_t *lines    # source line of each key (0 for pure markers)
    const uint32_t *dir      # bucket b holds keys[dir[b]:dir[b+1]]
    uint64_t n
    int shift                # bucket of key h is h >> shift


@cython.final
cdef class DomainTable:
    cdef TableView view
    cdef readonly uint64_t k0, k1
    cdef object _keys, _groups, _lines, _dir
    cdef Py_ssize_t find(self, uint64_t h) noexcept nogil
    cdef uint64_t hash_bytes(self, const char *data, Py_ssize_t n) noexcept nogil


cdef Py_ssize_t normalize_ascii(const char *s, Py_ssize_t n, char *out) noexcept nogil


@cython.final
cdef class MatchCore:
    cdef readonly DomainTable plain
    cdef readonly DomainTable hashed
    cdef bint use_hashed
    cdef uint8_t *gflags
    cdef uint64_t *gself
    cdef uint64_t *gbelow
    cdef Py_ssize_t ngroups
    cdef int _judge(self, uint16_t g, bint is_self, uint64_t mask) noexcept nogil
    # The walk over a normalised name in `buf`: -1, or the code of the deciding entry.
    cdef long long walk_buf(self, const char *buf, Py_ssize_t n, uint64_t mask) noexcept nogil
    cdef long long exact_buf(self, const char *buf, Py_ssize_t n, uint64_t mask) noexcept nogil

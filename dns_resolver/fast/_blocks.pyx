# cython: language_level=3
"""Block answers in C: the three templates (A, AAAA, other) and the EDE option of each
rule, memoised per policy the first time Python blocks by it (blocking.py, edns.py keep
the rules; C only replays their output)."""

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from dns_resolver.fast._wire cimport CD, QR, RA, RD, TC, add_opt, put16


cdef class BlockAnswers:
    """The block answers C writes; `ready` once Python has set the templates."""

    def __cinit__(self):
        self.ede_keys = <int64_t *>malloc(EDE_SLOTS * sizeof(int64_t))
        self.ede_vals = <int32_t *>malloc(EDE_SLOTS * sizeof(int32_t))
        self.ede_opts = <uint8_t **>calloc(MAX_EDE, sizeof(uint8_t *))
        self.ede_lens = <uint32_t *>calloc(MAX_EDE, sizeof(uint32_t))
        self.ede_metric = <uint16_t *>calloc(MAX_EDE, sizeof(uint16_t))
        if (self.ede_keys == NULL or self.ede_vals == NULL or self.ede_opts == NULL
                or self.ede_lens == NULL or self.ede_metric == NULL):
            raise MemoryError()
        memset(self.ede_keys, 0xFF, EDE_SLOTS * sizeof(int64_t))

    def __dealloc__(self):
        cdef int i
        if self.ede_opts != NULL:
            for i in range(self.nede):
                free(self.ede_opts[i])
        free(self.ede_keys)
        free(self.ede_vals)
        free(self.ede_opts)
        free(self.ede_lens)
        free(self.ede_metric)
        for i in range(3):
            free(self.tmpl[i].rec)

    def set_templates(self, list templates):
        """Block answers after the question, for A, AAAA and any other type:
        [(rcode, ancount, nscount, records)]."""
        cdef int i
        cdef bytes rec
        if len(templates) != 3:
            raise ValueError("three templates: A, AAAA, other")
        for i in range(3):
            rcode, an, ns, rec = templates[i]
            free(self.tmpl[i].rec)
            self.tmpl[i].rec = <uint8_t *>malloc(max(1, len(rec)))
            if self.tmpl[i].rec == NULL:
                raise MemoryError()
            memcpy(self.tmpl[i].rec, PyBytes_AS_STRING(rec), len(rec))
            self.tmpl[i].reclen = len(rec)
            self.tmpl[i].rcode = rcode
            self.tmpl[i].an = an
            self.tmpl[i].ns = ns
        self.ready = True

    def learn(self, int64_t code, int policy, bytes ede, int metric):
        """Memoise the EDE option (and the blocks counter index) of a block by `code` for
        clients of `policy`, so the next block by that rule is answered in C."""
        cdef int64_t key = code | (<int64_t>policy << 56)
        cdef uint64_t i
        if metric < 0 or metric >= MAX_BLOCK_KEYS:
            return  # counted by Python only: too many (category, list) pairs
        if ede_find(self, key) >= 0:
            return
        if self.nede >= MAX_EDE:
            self.forget()
        i = (<uint64_t>key * 0x9E3779B97F4A7C15ULL) >> 48
        while self.ede_keys[i] != -1:
            i = (i + 1) & (EDE_SLOTS - 1)
        self.ede_opts[self.nede] = <uint8_t *>malloc(max(1, len(ede)))
        if self.ede_opts[self.nede] == NULL:
            raise MemoryError()
        memcpy(self.ede_opts[self.nede], PyBytes_AS_STRING(ede), len(ede))
        self.ede_lens[self.nede] = len(ede)
        self.ede_metric[self.nede] = metric
        self.ede_keys[i] = key
        self.ede_vals[i] = self.nede
        self.nede += 1

    def forget(self):
        """Forget every memoised block EDE (lists or policies changed)."""
        cdef int i
        for i in range(self.nede):
            free(self.ede_opts[i])
            self.ede_opts[i] = NULL
        self.nede = 0
        memset(self.ede_keys, 0xFF, EDE_SLOTS * sizeof(int64_t))

    cdef uint32_t write(self, int idx, const uint8_t *d, uint32_t qend, uint16_t qflags,
                        uint16_t qtype, uint16_t qclass, bint edns, bint do, uint32_t limit,
                        int udp_size, uint8_t *out) noexcept nogil:
        """The block answer to query `d` (its question ends at `qend`) with memoised EDE
        `idx`; too big for `limit`, the header, question and OPT with TC."""
        cdef int i = 0 if qtype == 1 else (1 if qtype == 28 else 2)
        cdef const uint8_t *ede = self.ede_opts[idx]
        cdef uint32_t edelen = self.ede_lens[idx]
        cdef uint32_t optlen = 11 + edelen if edns else 0
        cdef uint32_t blen, total
        cdef uint16_t flags
        if qclass != 1:
            i = 2
        flags = QR | RA | (qflags & (0x7800 | RD | CD)) | self.tmpl[i].rcode
        blen = qend + self.tmpl[i].reclen
        out[0] = d[0]
        out[1] = d[1]
        put16(out + 2, flags)
        put16(out + 4, 1)
        if blen + optlen <= limit:
            put16(out + 6, self.tmpl[i].an)
            put16(out + 8, self.tmpl[i].ns)
            put16(out + 10, 1 if edns else 0)
            memcpy(out + 12, d + 12, qend - 12)
            memcpy(out + qend, self.tmpl[i].rec, self.tmpl[i].reclen)
            total = blen
        else:
            put16(out + 2, flags | TC)
            memset(out + 6, 0, 6)
            out[11] = 1 if edns else 0
            memcpy(out + 12, d + 12, qend - 12)
            total = qend
        return add_opt(out, total, edns, do, udp_size, ede, edelen)

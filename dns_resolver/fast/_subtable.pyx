# cython: language_level=3
"""The subscribers' serving table: a memory-mapped file every worker maps (one copy).

`SubscriberTable.create(path, capacity)` makes the writer's table; `SubscriberTable.open`
maps it read-only in the processes that serve. Addresses are given as `(plen, key)`:
plen 32 with the IPv4 address as an integer, or plen 48..64 with the first 64 bits of an
IPv6 prefix (`subscribers.addresses.table_key` makes them). See dns_resolver/fast/_subtable.h.
"""

import os

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int PROT_READ, PROT_WRITE, MAP_SHARED
    void *MAP_FAILED

cdef extern from "_subtable.h" nogil:
    ctypedef struct sub_entry:
        uint64_t key
        uint8_t plen
        uint16_t policy
        uint32_t lists
    uint64_t SUB_MAGIC
    sub_entry *sub_entries(const sub_header *h)
    int sub_find_addr(const sub_header *h, int family, const uint8_t *addr, uint32_t *lists)
    void sub_write_begin(sub_header *h)
    void sub_write_end(sub_header *h)
    int sub_put(sub_header *h, uint64_t key, uint8_t plen, uint16_t policy, uint32_t lists)
    int sub_del(sub_header *h, uint64_t key, uint8_t plen)

HEADER_SIZE = 64
ENTRY_SIZE = 16
MIN_CAPACITY = 1024
DROPPED = 0xFFFF  # a policy index no configuration has (remap)


def capacity_for(count: int) -> int:
    """The slots a table of `count` addresses starts with: a power of two, load <= 1/2."""
    cap = MIN_CAPACITY
    while cap < 2 * count:
        cap *= 2
    return cap


cdef inline bint _valid(int plen):
    return plen == 32 or 48 <= plen <= 64


cdef SubscriberTable _map(str path, bint create, uint64_t capacity):
    cdef SubscriberTable t = SubscriberTable.__new__(SubscriberTable)
    cdef void *base
    cdef int prot = PROT_READ | PROT_WRITE if create else PROT_READ
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        size = HEADER_SIZE + capacity * ENTRY_SIZE
        os.ftruncate(fd, size)
    else:
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            os.close(fd)
            raise ValueError(f"{path} is not a subscriber table (too short)")
    base = mmap(NULL, size, prot, MAP_SHARED, fd, 0)
    os.close(fd)  # the mapping keeps the file
    if base == MAP_FAILED:
        raise OSError(f"cannot map {path}")
    t.header = <sub_header *>base
    t.size = size
    t.writable = create
    t.path = path
    if create:
        t.header.magic = SUB_MAGIC
        t.header.capacity = capacity
    elif t.header.magic != SUB_MAGIC or size != HEADER_SIZE + t.header.capacity * ENTRY_SIZE:
        raise ValueError(f"{path} is not a subscriber table")
    return t


cdef class SubscriberTable:
    """One mapping of the table file; see the module's doc."""

    def __cinit__(self):
        self.header = NULL
        self.fd = -1

    @staticmethod
    def create(str path, uint64_t capacity=MIN_CAPACITY, list entries=None):
        """A new table at `path` holding `entries` ([(plen, key, policy, lists)]), written
        under a temporary name and renamed, so a reader maps it whole or not at all."""
        cdef SubscriberTable t
        if capacity & (capacity - 1) or capacity < 16:
            raise ValueError("capacity must be a power of two, at least 16")
        tmp = f"{path}.{os.getpid()}.new"
        t = _map(tmp, True, capacity)
        if entries:
            t.fill(entries)
        os.replace(tmp, path)
        t.path = path
        return t

    @staticmethod
    def open(str path):
        """Map the table at `path` read-only (what the serving processes do)."""
        return _map(path, False, 0)

    def __dealloc__(self):
        if self.header != NULL:
            munmap(self.header, self.size)

    @property
    def count(self) -> int:
        return self.header.count

    @property
    def capacity(self) -> int:
        return self.header.capacity

    @property
    def retired(self) -> bool:
        """A bigger table replaced this file at `path`: map it again."""
        return self.header.retired != 0

    @property
    def changes(self) -> int:
        return self.header.changes

    @property
    def nbytes(self) -> int:
        return self.size

    def lookup(self, bytes packed):
        """(policy index, own-lists id) of the subscriber holding the 4- or 16-byte address,
        or None."""
        cdef uint32_t lists = 0
        cdef int r
        cdef int family = 4 if len(packed) == 4 else 6
        if len(packed) not in (4, 16):
            raise ValueError("an address is 4 or 16 bytes")
        r = sub_lookup(self.header, family, <const uint8_t *>(<char *>packed), &lists)
        while r == -2:  # the writer is busy: Python can wait, unlike C
            r = sub_lookup(self.header, family, <const uint8_t *>(<char *>packed), &lists)
        return None if r < 0 else (r, lists)

    def _need_writer(self):
        if not self.writable:
            raise ValueError("this table is mapped read-only")

    def set(self, int plen, uint64_t key, int policy, uint32_t lists=0):
        """Map (plen, key) to (policy, lists), in place; grows the table when it is 3/4 full
        (the caller then has a new `SubscriberTable`: use the returned one)."""
        cdef SubscriberTable t = self
        self._need_writer()
        if not _valid(plen) or not 0 <= policy < 65536:
            raise ValueError(f"bad entry /{plen} policy {policy}")
        if (self.header.count + 1) * 4 > self.header.capacity * 3:
            t = self.grown(self.header.capacity * 2)
        sub_write_begin(t.header)
        sub_put(t.header, key, <uint8_t>plen, <uint16_t>policy, lists)
        sub_write_end(t.header)
        return t

    def remove(self, int plen, uint64_t key) -> bool:
        """Unmap (plen, key); True when it was mapped."""
        self._need_writer()
        sub_write_begin(self.header)
        found = sub_del(self.header, key, <uint8_t>plen)
        sub_write_end(self.header)
        return bool(found)

    def fill(self, list entries):
        """Set many [(plen, key, policy, lists)] at once (a build or a resync): one
        critical section, no growth (create the table with `capacity_for(len)`)."""
        cdef uint64_t key
        cdef uint32_t lists
        cdef int plen, policy
        self._need_writer()
        if (self.header.count + len(entries)) * 4 > self.header.capacity * 3:
            raise ValueError("the table is too small for these entries")
        sub_write_begin(self.header)
        try:
            for plen, key, policy, lists in entries:
                if _valid(plen) and 0 <= policy < 65536:
                    sub_put(self.header, key, <uint8_t>plen, <uint16_t>policy, lists)
        finally:
            sub_write_end(self.header)

    def remap(self, list mapping):
        """Renumber every entry's policy index: old index i becomes `mapping[i]` (a
        configuration reload that reorders the policies), in one critical section. An
        index without a place in `mapping` becomes `DROPPED`, which no reader serves (the
        caller removes those entries). How many entries were renumbered."""
        cdef sub_entry *e = sub_entries(self.header)
        cdef uint64_t i
        cdef uint16_t table[65536]
        cdef long moved = 0
        cdef Py_ssize_t n = len(mapping)
        self._need_writer()
        for i in range(65536):
            table[i] = mapping[i] if <Py_ssize_t>i < n else DROPPED
        sub_write_begin(self.header)
        with nogil:
            for i in range(self.header.capacity):
                if e[i].plen and e[i].policy != table[e[i].policy]:
                    e[i].policy = table[e[i].policy]
                    moved += 1
        sub_write_end(self.header)
        return moved

    def entries(self):
        """Every [(plen, key, policy, lists)] (for growing and for tests)."""
        cdef sub_entry *e = sub_entries(self.header)
        cdef uint64_t i
        return [(e[i].plen, e[i].key, e[i].policy, e[i].lists)
                for i in range(self.header.capacity) if e[i].plen]

    def retire(self):
        """Tell the readers that another file replaced this one at `path`."""
        self._need_writer()
        self.header.retired = 1

    def grown(self, uint64_t capacity):
        """A copy with `capacity` slots renamed over this file, which is retired."""
        cdef SubscriberTable t
        self._need_writer()
        t = SubscriberTable.create(self.path, capacity, self.entries())
        self.retire()
        return t

    def count_held(self, bytes packed, int width):
        """How many of the addresses packed back to back in `packed` (`width` 4 or 16 bytes
        each) a subscriber holds: one C loop, so a caller can time lookups as C sees them."""
        cdef const uint8_t *p = <const uint8_t *>(<char *>packed)
        cdef Py_ssize_t i, n = len(packed) // width
        cdef uint32_t lists
        cdef int family = 4 if width == 4 else 6
        cdef long found = 0
        if width not in (4, 16):
            raise ValueError("width is 4 or 16")
        with nogil:
            for i in range(n):
                if sub_lookup(self.header, family, p + i * width, &lists) >= 0:
                    found += 1
        return found

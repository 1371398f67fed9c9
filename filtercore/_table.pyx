# cython: language_level=3
"""The hashed domain table and the suffix walk: where a verdict's time goes.

Each key is the keyed 64-bit SipHash of a normalised name (or the first 8 bytes of the
SHA-256 of one, for confidential lists). Keys are stored sorted, with a bucket directory
indexed by the top bits of the hash: a lookup reads one directory word and scans the few
keys of one bucket. Sorted storage needs no empty slots, so the table costs 8 bytes of key,
2 of group id and 1-2 of directory per entry, and it is three flat arrays that a snapshot
can map from a file unchanged.

Every proper suffix of a listed name is present too (as a marker when not itself listed)
and a key carries HAS_CHILDREN when some listed name lies below it. A walk therefore starts
at the TLD and stops at the first absent suffix, or after a key with no children: most
unlisted names cost one or two probes, the first of which (the TLD) is always cached.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.list cimport PyList_GET_ITEM
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy

from filtercore.errors import InvalidNameError
from filtercore.normalize import normalize_name


cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil

cdef extern from "_sha256.h":
    uint64_t fc_sha256_prefix64(const unsigned char *data, size_t n) nogil


# ---------------------------------------------------------------------------------------
# Normalisation, ASCII fast path (the Python `normalize_name` handles everything else and
# produces the error messages).

cdef inline bint _is_space(char c) noexcept nogil:
    return c == 32 or (9 <= c <= 13)


cdef Py_ssize_t normalize_ascii(const char *s, Py_ssize_t n, char *out) noexcept nogil:
    """Lower-case and check an ASCII name into `out` (MAX_NAME + 1 bytes).

    Returns the length, -1 when the name needs the full (IDNA) path, -2 when invalid.
    """
    cdef Py_ssize_t i, lab = 0, start
    cdef char c
    while n > 0 and _is_space(s[0]):
        s += 1
        n -= 1
    while n > 0 and _is_space(s[n - 1]):
        n -= 1
    if n > 0 and s[n - 1] == 46:  # one trailing dot
        n -= 1
    if n == 0 or n > MAX_NAME:
        return -2
    for i in range(n):
        c = s[i]
        if 65 <= c <= 90:
            c = c + 32
        if (97 <= c <= 122) or (48 <= c <= 57) or c == 45 or c == 95:
            lab += 1
            if lab > 63:
                return -2
            if lab == 4 and c == 45 and out[i - 1] == 45 and out[i - 2] == 110 and out[i - 3] == 120:
                return -1  # an A-label: Punycode is checked on the slow path
        elif c == 46:
            if lab == 0:
                return -2
            lab = 0
        elif <unsigned char>c >= 128:
            return -1
        else:
            return -2
        out[i] = c
    if lab == 0:
        return -2
    return n


cdef inline Py_ssize_t _normalize_obj(object name, char *out) except -2:
    """Normalise a str into `out`; raise InvalidNameError; return the length."""
    cdef Py_ssize_t n, r
    cdef const char *s
    if type(name) is not str:
        raise TypeError(f"a name must be a str, not {type(name).__name__}")
    s = PyUnicode_AsUTF8AndSize(name, &n)
    r = normalize_ascii(s, n, out)
    if r >= 0:
        return r
    text = normalize_name(name)  # raises InvalidNameError with the reason
    encoded = text.encode("ascii")
    n = len(encoded)
    memcpy(out, PyBytes_AS_STRING(encoded), n)
    return n


def normalize(name: str) -> str:
    """Normalise a host name (C fast path for ASCII, `normalize_name` otherwise)."""
    cdef char buf[MAX_NAME + 1]
    cdef Py_ssize_t n = _normalize_obj(name, buf)
    return buf[:n].decode("ascii")


# ---------------------------------------------------------------------------------------
# The table.

cdef class DomainTable:
    """A read-only table of 64-bit keys with a group id and a source line per key."""

    def __cinit__(self):
        self.view.n = 0
        self.view.shift = 63

    @staticmethod
    def from_arrays(uint64_t k0, uint64_t k1, keys, groups, lines, dir_, int shift):
        """Wrap existing buffers (bytes, bytearray, mmap slices): nothing is copied."""
        cdef DomainTable t = DomainTable.__new__(DomainTable)
        cdef const uint64_t[::1] kv = memoryview(keys).cast("B").cast("Q")
        cdef const uint16_t[::1] gv = memoryview(groups).cast("B").cast("H")
        cdef const uint32_t[::1] lv = memoryview(lines).cast("B").cast("I")
        cdef const uint32_t[::1] dv = memoryview(dir_).cast("B").cast("I")
        if not (kv.shape[0] == gv.shape[0] == lv.shape[0]):
            raise ValueError("table arrays differ in length")
        if not 1 <= shift <= 63 or dv.shape[0] != (1 << (64 - shift)) + 1:
            raise ValueError("directory size does not match the shift")
        t.k0 = k0
        t.k1 = k1
        t._keys, t._groups, t._lines, t._dir = keys, groups, lines, dir_
        t.view.n = kv.shape[0]
        t.view.shift = shift
        if kv.shape[0]:
            t.view.keys = &kv[0]
            t.view.groups = &gv[0]
            t.view.lines = &lv[0]
            t.view.dir = &dv[0]
        return t

    cdef uint64_t hash_bytes(self, const char *data, Py_ssize_t n) noexcept nogil:
        return fc_siphash24(self.k0, self.k1, <const unsigned char *>data, n)

    cdef Py_ssize_t find(self, uint64_t h) noexcept nogil:
        cdef uint64_t b, i, hi
        cdef uint64_t k
        if self.view.n == 0:
            return -1
        b = h >> self.view.shift
        i = self.view.dir[b]
        hi = self.view.dir[b + 1]
        while i < hi:
            k = self.view.keys[i]
            if k >= h:
                return <Py_ssize_t>i if k == h else -1
            i += 1
        return -1

    def __len__(self):
        return self.view.n

    def hash_name(self, name: str) -> int:
        """The key of a normalised name under this table's secret."""
        data = name.encode("ascii")
        return self.hash_bytes(PyBytes_AS_STRING(data), len(data))

    def lookup_key(self, uint64_t key):
        """(slot, group id, has children, line) of a key, or None."""
        cdef Py_ssize_t slot = self.find(key)
        if slot < 0:
            return None
        g = self.view.groups[slot]
        return slot, g & GROUP_MASK, bool(g & HAS_CHILDREN), self.view.lines[slot]

    def slot_info(self, Py_ssize_t slot):
        """(key, group id, line) at a slot."""
        if not 0 <= slot < <Py_ssize_t>self.view.n:
            raise IndexError(slot)
        return self.view.keys[slot], self.view.groups[slot] & GROUP_MASK, self.view.lines[slot]

    @property
    def shift(self) -> int:
        return self.view.shift

    def buffers(self):
        """The (keys, groups, lines, directory) buffers, for writing a snapshot."""
        return self._keys, self._groups, self._lines, self._dir

    def table_bytes(self) -> int:
        """Bytes of the lookup structure (keys, group ids, directory)."""
        if self.view.n == 0:
            return 0
        return self.view.n * 10 + ((1 << (64 - self.view.shift)) + 1) * 4

    def side_bytes(self) -> int:
        """Bytes of the explanation side table (one source line per key)."""
        return self.view.n * 4


# ---------------------------------------------------------------------------------------
# Building.

cdef struct Record:
    uint64_t key
    uint32_t line
    uint16_t group


cdef int _cmp_records(const void *a, const void *b) noexcept nogil:
    cdef const Record *x = <const Record *>a
    cdef const Record *y = <const Record *>b
    if x.key != y.key:
        return -1 if x.key < y.key else 1
    # Among equal keys, earlier groups (earlier lists) first, then earlier lines, so the
    # explanation a merged key keeps is deterministic.
    if (x.group & GROUP_MASK) != (y.group & GROUP_MASK):
        return -1 if (x.group & GROUP_MASK) < (y.group & GROUP_MASK) else 1
    if x.line != y.line:
        return -1 if x.line < y.line else 1
    return 0


cdef int _sort_records(Record *recs, size_t n) except -1:
    """Sort by key, then group, then line: LSD radix sort, 16 bits a pass.

    Radix sort is several times faster than qsort on millions of uniformly distributed
    keys; qsort is left to order the rare runs of equal keys, which are short.
    """
    cdef Record *tmp = <Record *>malloc(n * sizeof(Record))
    cdef Record *src = recs
    cdef Record *dst = tmp
    cdef Record *swap
    cdef size_t *count = <size_t *>malloc(65537 * sizeof(size_t))
    cdef size_t i, j, total
    cdef int shift
    if tmp == NULL or count == NULL:
        free(tmp)
        free(count)
        raise MemoryError()
    with nogil:
        for shift in range(0, 64, 16):
            for i in range(65537):
                count[i] = 0
            for i in range(n):
                count[((src[i].key >> shift) & 0xFFFF) + 1] += 1
            for i in range(1, 65537):
                count[i] += count[i - 1]
            for i in range(n):
                j = (src[i].key >> shift) & 0xFFFF
                dst[count[j]] = src[i]
                count[j] += 1
            swap = src
            src = dst
            dst = swap
        # Four passes: the sorted records are back in `recs`. Order equal keys.
        i = 0
        while i < n:
            j = i + 1
            while j < n and recs[j].key == recs[i].key:
                j += 1
            if j - i > 1:
                qsort(recs + i, j - i, sizeof(Record), _cmp_records)
            i = j
    free(tmp)
    free(count)
    return 0


cdef class TableBuilder:
    """Collects (key, group, line) records, then sorts, merges and indexes them."""

    cdef Record *recs
    cdef size_t n, cap
    cdef readonly uint64_t k0, k1
    cdef readonly bint markers

    def __cinit__(self, bytes secret, bint markers=True):
        if len(secret) != 16:
            raise ValueError("the table secret is 16 bytes")
        self.k0 = int.from_bytes(secret[:8], "little")
        self.k1 = int.from_bytes(secret[8:], "little")
        self.markers = markers
        self.n = 0
        self.cap = 0
        self.recs = NULL

    def __dealloc__(self):
        free(self.recs)

    cdef int _push(self, uint64_t key, uint16_t group, uint32_t line) except -1:
        cdef Record *grown
        if self.n == self.cap:
            self.cap = self.cap * 2 if self.cap else 4096
            grown = <Record *>realloc(self.recs, self.cap * sizeof(Record))
            if grown == NULL:
                raise MemoryError()
            self.recs = grown
        self.recs[self.n].key = key
        self.recs[self.n].group = group
        self.recs[self.n].line = line
        self.n += 1
        return 0

    cdef int _add_name(self, str name, uint16_t group, uint32_t line) except -1:
        cdef Py_ssize_t n, i
        cdef const char *s = PyUnicode_AsUTF8AndSize(name, &n)
        self._push(fc_siphash24(self.k0, self.k1, <const unsigned char *>s, n), group, line)
        if self.markers:
            for i in range(n):
                if s[i] == 46:
                    self._push(
                        fc_siphash24(self.k0, self.k1, <const unsigned char *>(s + i + 1), n - i - 1),
                        HAS_CHILDREN,
                        0,
                    )
        return 0

    def add_name(self, str name, int group, uint32_t line):
        """Add a normalised name (ASCII) and, as markers, every proper suffix of it."""
        if not 0 < group <= GROUP_MASK:
            raise ValueError(f"group id {group} out of range")
        self._add_name(name, group, line)

    def add_name_run(self, list entries, Py_ssize_t start, Py_ssize_t end, int group):
        """`add_name` for entries[start:end] (filtercore Entry tuples: value at 1, line at 2).

        The compiler's bulk path: a million-line list is a handful of runs.
        """
        cdef Py_ssize_t i
        cdef PyObject *entry
        if not 0 < group <= GROUP_MASK:
            raise ValueError(f"group id {group} out of range")
        if not 0 <= start <= end <= len(entries):
            raise IndexError("run out of range")
        for i in range(start, end):
            entry = PyList_GET_ITEM(entries, i)
            self._add_name(
                <str>PyTuple_GET_ITEM(<object>entry, 1),
                group,
                <object>PyTuple_GET_ITEM(<object>entry, 2),
            )

    def add_key(self, uint64_t key, int group, uint32_t line):
        """Add a precomputed key (an IP literal's or a SHA-256 prefix), with no markers."""
        if not 0 < group <= GROUP_MASK:
            raise ValueError(f"group id {group} out of range")
        self._push(key, group, line)

    def hash_name(self, str name) -> int:
        cdef Py_ssize_t n
        cdef const char *s = PyUnicode_AsUTF8AndSize(name, &n)
        return fc_siphash24(self.k0, self.k1, <const unsigned char *>s, n)

    def __len__(self):
        return self.n

    def build(self, merge):
        """Sort, merge duplicate keys and index; return a DomainTable.

        `merge(group_a, group_b) -> group` is called when one key was added with two
        different groups (the same name in two lists); it is rare, so it may be Python.
        """
        cdef size_t i, j, out = 0, nb, b
        cdef uint16_t g, gid, other
        cdef uint32_t line
        cdef int bits = 0, shift
        cdef uint64_t *keys
        cdef uint16_t *groups
        cdef uint32_t *lines
        cdef uint32_t *dirp
        if self.n:
            _sort_records(self.recs, self.n)
        i = 0
        while i < self.n:
            g = self.recs[i].group
            gid = g & GROUP_MASK
            line = self.recs[i].line
            j = i + 1
            while j < self.n and self.recs[j].key == self.recs[i].key:
                other = self.recs[j].group & GROUP_MASK
                g |= self.recs[j].group & HAS_CHILDREN
                if other and gid == 0:
                    gid = other
                    line = self.recs[j].line
                elif other and other != gid:
                    gid = merge(gid, other)
                j += 1
            self.recs[out].key = self.recs[i].key
            self.recs[out].group = (g & HAS_CHILDREN) | gid
            self.recs[out].line = line
            out += 1
            i = j
        # Buckets: a power of two in (n/4, n/2], so a bucket holds 2-4 keys on average
        # (one cache line) and the directory costs 1-2 bytes per key. At least two, since
        # a shift by 64 is undefined in C.
        bits = 1
        while (<size_t>1 << (bits + 1)) <= out // 2:
            bits += 1
        shift = 64 - bits
        nb = <size_t>1 << bits
        keys_buf = bytearray(out * 8)
        groups_buf = bytearray(out * 2)
        lines_buf = bytearray(out * 4)
        dir_buf = bytearray((nb + 1) * 4)
        if out:
            keys = <uint64_t *><char *>keys_buf
            groups = <uint16_t *><char *>groups_buf
            lines = <uint32_t *><char *>lines_buf
            dirp = <uint32_t *><char *>dir_buf
            b = 0
            for i in range(out):
                keys[i] = self.recs[i].key
                groups[i] = self.recs[i].group
                lines[i] = self.recs[i].line
                while b <= (keys[i] >> shift):
                    dirp[b] = i
                    b += 1
            while b <= nb:
                dirp[b] = out
                b += 1
        free(self.recs)
        self.recs = NULL
        self.n = self.cap = 0
        return DomainTable.from_arrays(self.k0, self.k1, keys_buf, groups_buf, lines_buf, dir_buf, shift)


cdef int[7] _RUN_FIELDS = [0, 3, 4, 5, 6, 7, 8]


def run_end(list entries, Py_ssize_t start) -> int:
    """The end of the run of entries that differ from entries[start] only in value and line.

    Entries are filtercore `Entry` tuples; a run shares one list and one group, so the
    compiler resolves those once per run instead of once per entry.
    """
    cdef Py_ssize_t i, n = len(entries)
    cdef PyObject *first = PyList_GET_ITEM(entries, start)
    cdef PyObject *e
    cdef PyObject *a
    cdef PyObject *b
    cdef int f
    i = start + 1
    while i < n:
        e = PyList_GET_ITEM(entries, i)
        for f in range(7):
            a = PyTuple_GET_ITEM(<object>e, _RUN_FIELDS[f])
            b = PyTuple_GET_ITEM(<object>first, _RUN_FIELDS[f])
            if a != b and not (<object>a == <object>b):
                return i
        i += 1
    return n


# ---------------------------------------------------------------------------------------
# The walk.

cdef class MatchCore:
    """Domain verdicts over a plain table and an optional SHA-256 table.

    A walk answers with a code: -1 when no domain entry decides, otherwise
    `slot << 3 | self << 2 | table << 1 | allow`, where `self` says the entry is the name
    itself (not an ancestor), table 0 is the plain table and 1 the SHA-256 one.

    Per group: allow flags, and the categories whose block entries cover the name itself
    (`self_cats`) and the names below it (`below_cats`). Keeping the two apart matters when
    lists disagree on scope: `a` blocked as a subtree by one category and exactly by another
    must block `x.a` only for the first.
    """

    def __cinit__(self, DomainTable plain, DomainTable hashed, list flags, list self_cats,
                  list below_cats):
        cdef Py_ssize_t i
        self.plain = plain
        self.hashed = hashed
        self.use_hashed = hashed is not None and len(hashed) > 0
        self.ngroups = len(flags)
        if len(self_cats) != self.ngroups or len(below_cats) != self.ngroups:
            raise ValueError("group arrays differ in length")
        self.gflags = <uint8_t *>malloc(max(1, self.ngroups) * sizeof(uint8_t))
        self.gself = <uint64_t *>malloc(max(1, self.ngroups) * sizeof(uint64_t))
        self.gbelow = <uint64_t *>malloc(max(1, self.ngroups) * sizeof(uint64_t))
        if self.gflags == NULL or self.gself == NULL or self.gbelow == NULL:
            raise MemoryError()
        for i in range(self.ngroups):
            self.gflags[i] = flags[i]
            self.gself[i] = self_cats[i]
            self.gbelow[i] = below_cats[i]

    def __dealloc__(self):
        free(self.gflags)
        free(self.gself)
        free(self.gbelow)

    cdef int _judge(self, uint16_t g, bint is_self, uint64_t mask) noexcept nogil:
        """1 allow, 0 block, -1 no decision at this key."""
        cdef uint16_t gid = g & GROUP_MASK
        cdef uint8_t f
        if gid == 0 or gid >= self.ngroups:
            return -1
        f = self.gflags[gid]
        if is_self:
            if f & G_ALLOW_SELF:
                return 1
            if self.gself[gid] & mask:
                return 0
        else:
            if f & G_ALLOW_BELOW:
                return 1
            if self.gbelow[gid] & mask:
                return 0
        return -1

    cdef long long walk_buf(self, const char *buf, Py_ssize_t n, uint64_t mask) noexcept nogil:
        cdef Py_ssize_t starts[128]
        cdef Py_ssize_t nl = 0, i, off, slot
        cdef long long best = -1
        cdef int best_depth = -1, depth, r
        cdef uint16_t g
        starts[0] = 0
        nl = 1
        for i in range(n):
            if buf[i] == 46:
                starts[nl] = i + 1
                nl += 1
        # From the TLD down; the deepest deciding key wins, allow before block at a key.
        for depth in range(nl):
            off = starts[nl - 1 - depth]
            slot = self.plain.find(self.plain.hash_bytes(buf + off, n - off))
            if slot < 0:
                break
            g = self.plain.view.groups[slot]
            r = self._judge(g, off == 0, mask)
            if r >= 0:
                best = (<long long>slot << 3) | ((off == 0) << 2) | r
                best_depth = depth
            if not (g & HAS_CHILDREN):
                break
        if self.use_hashed:
            # Digests reveal nothing about their ancestors, so every level is hashed.
            for depth in range(nl):
                off = starts[nl - 1 - depth]
                slot = self.hashed.find(
                    fc_sha256_prefix64(<const unsigned char *>(buf + off), n - off))
                if slot < 0:
                    continue
                r = self._judge(self.hashed.view.groups[slot], off == 0, mask)
                if r >= 0 and (depth > best_depth or (depth == best_depth and r == 1)):
                    best = (<long long>slot << 3) | ((off == 0) << 2) | 2 | r
                    best_depth = depth
        return best

    def walk(self, name, uint64_t mask=0xFFFFFFFFFFFFFFFF) -> int:
        """The code of the domain entry that decides `name` (see the class docstring)."""
        cdef char buf[MAX_NAME + 1]
        cdef Py_ssize_t n = _normalize_obj(name, buf)
        return self.walk_buf(buf, n, mask)

    def walk_normalized(self, str name, uint64_t mask=0xFFFFFFFFFFFFFFFF) -> int:
        """`walk` for a name already normalised."""
        cdef Py_ssize_t n
        cdef const char *s = PyUnicode_AsUTF8AndSize(name, &n)
        return self.walk_buf(s, n, mask)

    def walk_many(self, names, uint64_t mask=0xFFFFFFFFFFFFFFFF) -> list:
        """`walk` for each name; an invalid name gives None in its place."""
        cdef char buf[MAX_NAME + 1]
        cdef Py_ssize_t n
        cdef list out = []
        for name in names:
            try:
                n = _normalize_obj(name, buf)
            except InvalidNameError:
                out.append(None)
                continue
            out.append(self.walk_buf(buf, n, mask))
        return out

    cdef long long exact_buf(self, const char *buf, Py_ssize_t n, uint64_t mask) noexcept nogil:
        cdef Py_ssize_t slot = self.plain.find(self.plain.hash_bytes(buf, n))
        cdef int r
        if slot < 0:
            return -1
        r = self._judge(self.plain.view.groups[slot], True, mask)
        return -1 if r < 0 else ((<long long>slot << 3) | 4 | r)

    def exact(self, str key_text, uint64_t mask=0xFFFFFFFFFFFFFFFF) -> int:
        """The code of an exact (non-walking) plain-table key, such as an IP literal's."""
        cdef Py_ssize_t n
        cdef const char *s = PyUnicode_AsUTF8AndSize(key_text, &n)
        return self.exact_buf(s, n, mask)

    def hashed_exact(self, uint64_t key, uint64_t mask=0xFFFFFFFFFFFFFFFF) -> int:
        """The code of a key in the SHA-256 table (URL expressions), matched exactly."""
        cdef Py_ssize_t slot
        cdef int r
        if not self.use_hashed:
            return -1
        slot = self.hashed.find(key)
        if slot < 0:
            return -1
        r = self._judge(self.hashed.view.groups[slot], True, mask)
        return -1 if r < 0 else ((<long long>slot << 3) | 4 | 2 | r)


# ---------------------------------------------------------------------------------------
# Verdict lookup with a per-code cache: a verdict depends only on the rule that decided it,
# so the Python object is made once per rule and shared.

cdef inline bint _needs_python(object name):
    """IP literals (and names ending in a digit, which might be) take the Python path."""
    cdef Py_ssize_t n
    cdef const char *s = PyUnicode_AsUTF8AndSize(name, &n)
    while n > 0 and _is_space(s[n - 1]):
        n -= 1
    if n == 0:
        return False
    return (48 <= s[n - 1] <= 57) or s[n - 1] == 93 or b":"[0] in s[:n]


cdef class VerdictCache:
    """Turns walk codes into shared Verdict objects; the batch path stays in C."""

    cdef MatchCore core
    cdef dict cache
    cdef object no_match
    cdef object make
    cdef bint text_rules

    def __cinit__(self, MatchCore core, no_match, make, bint text_rules):
        self.core = core
        self.cache = {}
        self.no_match = no_match
        self.make = make  # make(code, name) -> Verdict; code -1: text rules, -2: IP path
        self.text_rules = text_rules

    cdef inline object _one(self, object name, uint64_t mask, char *buf):
        cdef Py_ssize_t n
        cdef long long code
        if type(name) is not str:
            raise TypeError(f"a name must be a str, not {type(name).__name__}")
        if _needs_python(name):
            return self.make(-2, name, mask)
        n = _normalize_obj(name, buf)
        code = self.core.walk_buf(buf, n, mask)
        if code < 0:
            if self.text_rules:
                return self.make(-1, buf[:n].decode("ascii"), mask)
            return self.no_match
        v = self.cache.get(code)
        if v is None:
            v = self.make(code, buf[:n].decode("ascii"), mask)
            self.cache[code] = v
        return v

    def check(self, name, uint64_t mask=0xFFFFFFFFFFFFFFFF):
        cdef char buf[MAX_NAME + 1]
        return self._one(name, mask, buf)

    def check_many(self, names, uint64_t mask=0xFFFFFFFFFFFFFFFF) -> list:
        cdef char buf[MAX_NAME + 1]
        cdef list out = []
        for name in names:
            out.append(self._one(name, mask, buf))
        return out

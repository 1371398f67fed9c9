# cython: language_level=3
"""Query log lines written in C for the answers C gives, byte for byte what
`querylog.QueryLog._format` writes, into a buffer Python drains (`take`)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset, strlen

from dns_resolver.fast._blocks cimport MAX_BLOCK_KEYS
from dns_resolver.fast._wire cimport (AF_INET6, addr_text, client_of, gmtime_r, inet_ntop,
                                 read_name, strftime, time_t, tm)

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n) nogil

cdef const char *_RESULTS[4]
_RESULTS[0] = "cached"
_RESULTS[1] = "blocked"
_RESULTS[2] = "allowed"
_RESULTS[3] = "ratelimited"

DEF LINE_MAX = 1024  # the longest line: a 253-byte name escaped, labels, the rest


cdef class LogBuffer:
    """Off until `configure`; block labels (`label_block`) may come before."""

    def __cinit__(self):
        self.block_json = <char **>calloc(MAX_BLOCK_KEYS, sizeof(char *))
        if self.block_json == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef int i
        free(self.buf)
        if self.qtype_json != NULL:
            for i in range(65536):
                free(self.qtype_json[i])
            free(self.qtype_json)
        if self.block_json != NULL:
            for i in range(MAX_BLOCK_KEYS):
                free(self.block_json[i])
            free(self.block_json)

    def configure(self, int anonymize, bytes key, dict qtype_json, size_t capacity):
        """Write a line for every answer given in C into a buffer of `capacity` bytes
        (the first call sizes it) that `take` drains; lines that do not fit are counted in
        `dropped`.

        Args:
            anonymize: the index of the mode in `config.ANONYMIZE_MODES`: 0 "truncate",
                1 "hash" (keyed with `key`, 16 bytes), 2 "none".
            qtype_json: {qtype code: its JSON string} for the mnemonics; other codes are
                written as their number in a string, as querylog.py does.
        """
        cdef int code
        cdef bytes raw
        if len(key) != 16:
            raise ValueError("the query log key has 16 bytes")
        if self.buf == NULL:
            self.buf = <char *>malloc(capacity)
            self.qtype_json = <char **>calloc(65536, sizeof(char *))
            if self.buf == NULL or self.qtype_json == NULL:
                raise MemoryError()
            self.cap = capacity
        for code, text in qtype_json.items():
            raw = text.encode("ascii")
            free(self.qtype_json[code & 0xFFFF])
            self.qtype_json[code & 0xFFFF] = <char *>calloc(len(raw) + 1, 1)
            if self.qtype_json[code & 0xFFFF] == NULL:
                raise MemoryError()
            memcpy(self.qtype_json[code & 0xFFFF], PyBytes_AS_STRING(raw), len(raw))
        self.anon = anonymize
        self.k0 = int.from_bytes(key[:8], "little")
        self.k1 = int.from_bytes(key[8:], "little")
        self.sec = -1
        self.on = True

    def stop(self):
        """Write no more lines; those already written stay for `take`."""
        self.on = False

    def label_block(self, int metric, bytes fields):
        """The `"category":..,"list":..` for blocks counted under `metric`."""
        if metric < 0 or metric >= MAX_BLOCK_KEYS:
            return
        free(self.block_json[metric])
        self.block_json[metric] = <char *>calloc(len(fields) + 1, 1)
        if self.block_json[metric] == NULL:
            raise MemoryError()
        memcpy(self.block_json[metric], PyBytes_AS_STRING(fields), len(fields))

    def take(self):
        """The lines written since the last call (bytes, whole lines)."""
        cdef bytes out
        if self.len == 0:
            return b""
        out = PyBytes_FromStringAndSize(self.buf, self.len)
        self.len = 0
        return out

    cdef void write(self, const void *sa, const uint8_t *q, uint32_t qlen, uint16_t qtype,
                    int result, int metric, double duration, double wall,
                    const char *protocol) noexcept nogil:
        """Append one line, byte for byte what `QueryLog._format` writes for it."""
        cdef char *out
        cdef char client[64]
        cdef char text[64]
        cdef char name[256]
        cdef char ms[32]
        cdef uint8_t a6[16]
        cdef int family, nl, i, k
        cdef const uint8_t *addr
        cdef long sec
        cdef tm t
        cdef time_t tt
        cdef int millis
        cdef const char *fields = '"category":null,"list":null'
        cdef const char *qt
        cdef char qnum[16]
        if self.cap - self.len < LINE_MAX:
            self.dropped += 1
            return
        sec = <long>wall
        if sec != self.sec:
            self.sec = sec
            tt = sec
            gmtime_r(&tt, &t)
            strftime(self.stamp, sizeof(self.stamp), "%Y-%m-%dT%H:%M:%S", &t)
        millis = <int>((wall - sec) * 1000)
        if millis > 999:
            millis = 999
        # The client as the socket reports it (what Python gets from recvfrom) ...
        addr_text(sa, text)
        # ... then querylog.anonymize_client: its /24 or /48, a keyed hash, or as is.
        if self.anon == 1:
            snprintf(client, 64, '"%016llx"',
                     <unsigned long long>fc_siphash24(self.k0, self.k1,
                                                      <const unsigned char *>text,
                                                      strlen(text)))
        elif self.anon == 0 and client_of(sa, &family, &addr) == 0:
            if family == 4:
                snprintf(client, 64, '"%u.%u.%u.0"', addr[0], addr[1], addr[2])
            else:
                memset(a6, 0, 16)
                memcpy(a6, addr, 6)
                inet_ntop(AF_INET6, a6, text, 64)
                snprintf(client, 64, '"%s"', text)
        else:
            snprintf(client, 64, '"%s"', text)
        # The name is lower-case printable ASCII without backslashes (else Python had it):
        # only a quote needs escaping for JSON.
        nl = read_name(q, qlen, 12, name)
        if nl < 0:
            nl = 0
        qt = self.qtype_json[qtype]
        if qt == NULL:
            snprintf(qnum, 16, '"%u"', qtype)
            qt = qnum
        if result == L_BLOCKED and 0 <= metric < MAX_BLOCK_KEYS and self.block_json[metric] != NULL:
            fields = self.block_json[metric]
        # duration_ms is round(seconds * 1000, 3) printed as Python prints floats.
        k = snprintf(ms, 32, "%.3f", duration * 1000)
        while k > 2 and ms[k - 1] == 48 and ms[k - 2] != 46:
            k -= 1
        ms[k] = 0
        out = self.buf + self.len
        k = snprintf(out, LINE_MAX, '{"timestamp":"%s.%03dZ","client":%s,"qname":"',
                     self.stamp, millis, client)
        for i in range(nl):
            if name[i] == 34:
                out[k] = 92
                k += 1
            out[k] = name[i]
            k += 1
        k += snprintf(out + k, LINE_MAX - k,
                      '","qtype":%s,"protocol":"%s","result":"%s",%s,"rcode":null,'
                      '"duration_ms":%s}\n', qt, protocol, _RESULTS[result], fields, ms)
        self.len += k

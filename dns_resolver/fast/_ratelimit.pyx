# cython: language_level=3
"""Rate limits per client network: a token bucket per /24 (IPv4) or /56 (IPv6) network.

One `RateLimiter` per worker process, shared by the C fast path (UDP and TCP,
`FastPath._limited`) and the Python chain (when the fast path is off). The fast path
loops and the event loop run on one thread, so there is no lock. A network has one bucket for UDP and
one for TCP, with the same rate: a client told to retry over TCP (`truncate`) is served
there, while a spoofed source, which cannot complete a TCP handshake, gets nothing.

The table is bounded: `max_networks` buckets in sets of RL_WAYS, found by a keyed hash
(SipHash, a random key per process: a client cannot aim at a set). A new network takes an
unused bucket of its set or evicts the least recently seen one, which then starts again
with a full bucket when it comes back: a flood from more networks than the table holds is
limited less, never refused service.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

import ipaddress
import os

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t n) nogil

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_MONOTONIC


ACTIONS = ("drop", "refused", "truncate")  # fdconfig.ratelimit.ACTIONS, by RL_* index


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class RateLimiter:
    """Token buckets per client network.

    Args:
        qps: tokens added per second.
        burst: the bucket's size (a new network starts full).
        ipv4_prefix, ipv6_prefix: the network a client's bucket is keyed by.
        action: the index of the action in `ACTIONS`.
        exempt: networks never limited, as `ipaddress` networks.
        max_networks: the buckets (rounded up to a power of two, at least 64).
    """

    def __cinit__(self, double qps, int burst, int ipv4_prefix=24, int ipv6_prefix=56,
                  int action=RL_TRUNCATE, exempt=(), uint64_t max_networks=65536):
        cdef bytes secret = os.urandom(16)
        cdef uint64_t n = 64
        cdef int i = 0
        if not qps > 0 or burst < 1 or not 0 <= action < 3:
            raise ValueError("qps > 0, burst >= 1 and an action index 0..2 are required")
        while n < max_networks:
            n <<= 1
        self.nsets = n // RL_WAYS
        self.table = <Bucket *>calloc(n, sizeof(Bucket))
        nets = [ipaddress.ip_network(net) for net in exempt]
        self.exempt = <Net *>calloc(max(1, len(nets)), sizeof(Net))
        if self.table == NULL or self.exempt == NULL:
            raise MemoryError()
        for net in nets:
            self.exempt[i].family = net.version
            self.exempt[i].prefix = net.prefixlen
            packed = net.network_address.packed
            memcpy(self.exempt[i].addr, <const char *>packed, len(packed))
            i += 1
        self.nexempt = i
        self.k0 = int.from_bytes(secret[:8], "little")
        self.k1 = int.from_bytes(secret[8:], "little")
        self.qps = qps
        self.burst = burst
        self.prefix4 = max(0, min(ipv4_prefix, 32))
        self.prefix6 = max(0, min(ipv6_prefix, 128))
        self.action = action

    def __dealloc__(self):
        free(self.table)
        free(self.exempt)

    cdef int check(self, int family, const uint8_t *addr, double now, bint tcp) noexcept nogil:
        """Charge one query from `addr` (4 or 16 bytes, network order) at `now`
        (CLOCK_MONOTONIC seconds) to its UDP or TCP bucket: RL_PASS, RL_LIMITED or
        RL_LIMITED_LOG."""
        cdef uint8_t key[17]
        cdef int prefix = self.prefix4 if family == 4 else self.prefix6
        cdef int size = 4 if family == 4 else 16
        cdef int full = prefix >> 3, rest = prefix & 7, i
        cdef uint64_t h
        cdef Bucket *way
        cdef Bucket *b = NULL
        cdef Bucket *victim
        for i in range(self.nexempt):
            if in_net(&self.exempt[i], family, addr):
                return RL_PASS
        memset(key, 0, sizeof(key))
        key[0] = family + (16 if tcp else 0)
        memcpy(key + 1, addr, full)
        if rest:
            key[1 + full] = addr[full] & (0xFF << (8 - rest)) & 0xFF
        h = fc_siphash24(self.k0, self.k1, key, 1 + size) | 1  # never 0 (unused)
        way = self.table + (h & (self.nsets - 1)) * RL_WAYS
        victim = way
        for i in range(RL_WAYS):
            if way[i].hash == h and memcmp(way[i].key, key, 1 + size) == 0:
                b = &way[i]
                break
            if way[i].hash == 0:
                if victim.hash != 0:
                    victim = &way[i]
            elif victim.hash != 0 and way[i].last < victim.last:
                victim = &way[i]
        if b == NULL:
            b = victim
            b.hash = h
            memcpy(b.key, key, sizeof(key))
            b.tokens = self.burst
            b.last = now
            b.logged = now - 1.0
        elif now > b.last:
            b.tokens += (now - b.last) * self.qps
            if b.tokens > self.burst:
                b.tokens = self.burst
            b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return RL_PASS
        # At least a second apart: never two lines in one second of the log's clock.
        if now - b.logged >= 1.0:
            b.logged = now
            return RL_LIMITED_LOG
        return RL_LIMITED

    cdef void count(self, int action) noexcept nogil:
        self.applied[action] += 1

    def limit(self, str client, bint tcp=False):
        """The Python chain's check for one query from `client` (an IP literal):
        (verdict, action): verdict is RL_PASS (0), RL_LIMITED (1) or RL_LIMITED_LOG (2);
        action the name of what the query gets when limited: over TCP always "refused"
        (truncation means nothing there, and a dropped query would hold the connection
        until the client gives up). A limited query is counted under its action."""
        cdef bytes packed
        cdef int verdict, action = self.action
        try:
            ip = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return RL_PASS, None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        packed = ip.packed
        verdict = self.check(ip.version, <const uint8_t *><const char *>packed, _monotonic(),
                             tcp)
        if verdict == RL_PASS:
            return RL_PASS, None
        if tcp:
            action = RL_REFUSED
        self.applied[action] += 1
        return verdict, ACTIONS[action]

    def counters(self):
        """{action name: limited queries} since the start."""
        return {ACTIONS[i]: self.applied[i] for i in range(3)}

# DNS wire format as C reads and writes it: the system declarations the fast path's modules
# share, DNS constants, and small inline helpers (byte order, names, our OPT record).
# Declarations and inline functions only: there is no module behind this file.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    struct tm:
        pass
    int clock_gettime(int clk, timespec *ts)
    tm *gmtime_r(const time_t *t, tm *out)
    size_t strftime(char *s, size_t max, const char *fmt, const tm *t)
    enum: CLOCK_MONOTONIC
    enum: CLOCK_REALTIME

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)
    enum: AF_INET
    enum: AF_INET6
    enum: MSG_DONTWAIT
    enum: MSG_TRUNC

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct in6_addr:
        uint8_t s6_addr[16]
    struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    uint16_t ntohs(uint16_t)
    uint32_t ntohl(uint32_t)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)


cdef enum:
    QR = 0x8000
    AA = 0x0400
    TC = 0x0200
    RD = 0x0100
    RA = 0x0080
    CD = 0x0010
    TYPE_A = 1
    TYPE_CNAME = 5
    TYPE_SOA = 6
    TYPE_AAAA = 28
    TYPE_DNAME = 39
    TYPE_OPT = 41
    TYPE_ANY = 255
    MAX_TTL_VALUE = 0x7FFFFFFF  # RFC 2181 8: larger TTLs are treated as 0
    PLAIN_UDP = 512


cdef inline double mono_now() noexcept nogil:
    """CLOCK_MONOTONIC seconds: the clock of time.monotonic()."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline double wall_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline uint16_t u16(const uint8_t *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline uint32_t u32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline void put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline uint32_t clean_ttl(uint32_t ttl) noexcept nogil:
    return 0 if ttl > MAX_TTL_VALUE else ttl


cdef inline uint32_t skip_name(const uint8_t *d, uint32_t n, uint32_t pos) noexcept nogil:
    """The offset after the name at `pos`, or 0 when it runs off the message."""
    cdef uint8_t c
    while pos < n:
        c = d[pos]
        if c == 0:
            return pos + 1
        if (c & 0xC0) == 0xC0:
            return pos + 2 if pos + 2 <= n else 0
        if c & 0xC0:
            return 0
        pos += 1 + c
    return 0


cdef inline int read_name(const uint8_t *d, uint32_t n, uint32_t pos, char *out) noexcept nogil:
    """The name at `pos` (compression followed) as lower-case dotted text in `out` (256
    bytes). -1 when it is malformed or has bytes `wire.name_text` would escape: the
    answer then goes to Python, which decides with the same rules as for any name."""
    cdef uint32_t olen = 0, i
    cdef int hops = 0
    cdef uint8_t c, b
    while True:
        if pos >= n:
            return -1
        c = d[pos]
        if c == 0:
            return olen
        if (c & 0xC0) == 0xC0:
            if pos + 1 >= n or hops >= 64:
                return -1
            pos = ((c & 0x3F) << 8) | d[pos + 1]
            hops += 1
            continue
        if c & 0xC0 or pos + 1 + c > n or olen + c + 1 > 254:
            return -1
        if olen:
            out[olen] = 46
            olen += 1
        for i in range(pos + 1, pos + 1 + c):
            b = d[i]
            if b < 0x21 or b > 0x7E or b == 46 or b == 92:
                return -1
            if 65 <= b <= 90:
                b += 32
            out[olen] = b
            olen += 1
        pos += 1 + c


cdef inline bint ip_like(const char *name, uint32_t n) noexcept nogil:
    """Ends in a digit or ']' or has a ':': IP-literal-like, which Matcher.check takes on
    its Python path."""
    cdef uint8_t c = <uint8_t>name[n - 1]
    return (48 <= c <= 57) or c == 93 or memchr(name, 58, n) != NULL


cdef inline void addr_text(const void *sa, char *text) noexcept nogil:
    """The address of a sockaddr_in/_in6 as inet_ntop writes it (64 bytes)."""
    if (<const sockaddr *>sa).sa_family == AF_INET6:
        inet_ntop(AF_INET6, &(<const sockaddr_in6 *>sa).sin6_addr, text, 64)
    else:
        inet_ntop(AF_INET, &(<const sockaddr_in *>sa).sin_addr, text, 64)


cdef inline int client_of(const void *sa, int *family, const uint8_t **addr) noexcept nogil:
    """The family (4 or 6) and address bytes of a sockaddr_in/_in6; -1 for other kinds."""
    cdef const sockaddr *s = <const sockaddr *>sa
    cdef const uint8_t *a6
    if s.sa_family == AF_INET:
        family[0] = 4
        addr[0] = <const uint8_t *>&(<const sockaddr_in *>sa).sin_addr
        return 0
    if s.sa_family == AF_INET6:
        a6 = (<const sockaddr_in6 *>sa).sin6_addr.s6_addr
        # An IPv4 client on a dual-stack socket: ::ffff:a.b.c.d (the ACL does the same).
        if memcmp(a6, b"\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0:
            family[0] = 4
            addr[0] = a6 + 12
        else:
            family[0] = 6
            addr[0] = a6
        return 0
    return -1


cdef inline uint32_t add_opt(uint8_t *out, uint32_t total, bint edns, bint do,
                             int udp_size, const uint8_t *ede, uint32_t edelen) noexcept nogil:
    """Append our OPT record (DO echoed, `ede` as its option) when the query had EDNS."""
    if not edns:
        return total
    out[total] = 0
    put16(out + total + 1, TYPE_OPT)
    put16(out + total + 3, udp_size)
    out[total + 5] = 0
    out[total + 6] = 0
    put16(out + total + 7, 0x8000 if do else 0)
    put16(out + total + 9, edelen)
    memcpy(out + total + 11, ede, edelen)
    return total + 11 + edelen

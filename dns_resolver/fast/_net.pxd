# A client network as C matches it: the fast path's ACL, policy networks and trusted
# forwarders, and the rate limiter's exempt networks. Declarations and an inline function
# only: there is no module behind this file.
from libc.stdint cimport uint8_t
from libc.string cimport memcmp


cdef struct Net:
    int family             # 4 or 6
    int prefix
    int value              # what the network maps to (a policy index), or unused
    uint8_t addr[16]


cdef inline bint in_net(const Net *net, int family, const uint8_t *addr) noexcept nogil:
    """Whether `addr` (4 or 16 bytes of `family`) is inside `net`."""
    cdef int full, rest
    if net.family != family:
        return False
    full = net.prefix >> 3
    rest = net.prefix & 7
    if full and memcmp(net.addr, addr, full) != 0:
        return False
    if rest:
        return ((net.addr[full] ^ addr[full]) & (0xFF << (8 - rest)) & 0xFF) == 0
    return True

# cython: language_level=3
"""ClientIDs -> policies in C, as `PolicyTable.select` maps them (docs/policies.md).

A ClientID is the label of the TLS server name below `[tls] server_name` (DoT, DoQ) or the
DoH path segment. A policy lists its devices' IDs in `client_ids`; when it also lists
`client_id_networks`, an ID counts only from an address inside one of them. `lookup`
gives the policy index, or -1 when the ID is unknown or presented from elsewhere: the
query then gets what its address would get. The table is an open-addressing hash of the
IDs (SipHash with a per-process key, so no one can choose IDs that collide), replaced as a
whole when the policies change (`FastPath.set_client_ids`).
"""

import os

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy

from dns_resolver.fast._net cimport Net, in_net

cdef extern from "_siphash.h":
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t n) nogil


cdef class ClientIds:
    """The ClientIDs of the policies (see the module's docstring).

    Args:
        ids: [(ClientID, policy index)]: one DNS label each, lower case.
        nets: `client_id_networks` as [(family, packed network, prefix, policy index)].
    """

    def __cinit__(self, list ids, list nets):
        cdef bytes secret = os.urandom(16)
        cdef bytes raw
        cdef uint64_t h, slot
        cdef int i = 0
        cdef int policy
        self.k0 = int.from_bytes(secret[:8], "little")
        self.k1 = int.from_bytes(secret[8:], "little")
        self.nets = <Net *>calloc(max(1, len(nets)), sizeof(Net))
        if self.nets == NULL:
            raise MemoryError()
        for family, packed, prefix, policy in nets:
            if not 0 <= policy < MAX_ID_POLICIES:
                raise ValueError(f"policy index {policy} out of range")
            self.nets[i].family = family
            self.nets[i].prefix = prefix
            self.nets[i].value = policy
            memcpy(self.nets[i].addr, <char *>packed, len(packed))
            self.bound[policy] = True
            i += 1
        self.nnets = i
        if not ids:
            return
        self.nslots = 8
        while self.nslots < 2 * len(ids):
            self.nslots *= 2
        self.slots = <IdSlot *>calloc(self.nslots, sizeof(IdSlot))
        if self.slots == NULL:
            raise MemoryError()
        for text, policy in ids:
            raw = text.encode("ascii")
            if not 0 < len(raw) < CLIENT_ID_MAX:
                raise ValueError(f"{text!r} is not a ClientID (one DNS label)")
            if not 0 <= policy < MAX_ID_POLICIES:
                raise ValueError(f"policy index {policy} out of range")
            h = fc_siphash24(self.k0, self.k1, <char *>raw, len(raw)) | 1
            slot = h & (self.nslots - 1)
            while self.slots[slot].h != 0:
                slot = (slot + 1) & (self.nslots - 1)
            self.slots[slot].h = h
            self.slots[slot].policy = policy
            memcpy(self.slots[slot].id, <char *>raw, len(raw))
            self.count += 1

    def __dealloc__(self):
        free(self.slots)
        free(self.nets)

    cdef int lookup(self, const char *cid, uint32_t n, int family,
                    const uint8_t *addr) noexcept nogil:
        """The policy of ClientID `cid` (`n` bytes, lower case) presented from `addr` (4 or
        16 bytes of `family`); -1: unknown, or not from its policy's networks."""
        cdef uint64_t h, slot
        cdef int policy, i
        if self.nslots == 0 or n == 0 or n >= CLIENT_ID_MAX:
            return -1
        h = fc_siphash24(self.k0, self.k1, cid, n) | 1
        slot = h & (self.nslots - 1)
        while self.slots[slot].h != 0:
            if (self.slots[slot].h == h and self.slots[slot].id[n] == 0
                    and memcmp(self.slots[slot].id, cid, n) == 0):
                policy = self.slots[slot].policy
                if not self.bound[policy]:
                    return policy
                for i in range(self.nnets):
                    if self.nets[i].value == policy and in_net(&self.nets[i], family, addr):
                        return policy
                return -1
            slot = (slot + 1) & (self.nslots - 1)
        return -1

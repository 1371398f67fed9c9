# cython: language_level=3
"""SHA-256 (`_sha256.h`) and SipHash-2-4 (`_siphash.h`) for Python callers.

The domain table and the DNS fast path call the C functions directly; this module exposes
the same code to Python so that tests can check it against `hashlib` and reference vectors,
tools can compute the 64-bit keys the table stores for hashed entries, and the query log's
Python writer pseudonymises clients exactly as the fast path does.
"""

from libc.stdint cimport uint64_t


cdef extern from "_siphash.h" nogil:
    uint64_t fc_siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, size_t n)

cdef extern from "_sha256.h" nogil:
    void fc_sha256(const unsigned char *data, size_t length, unsigned char *out)
    uint64_t fc_sha256_prefix64(const unsigned char *data, size_t length)
    int fc_sha256_set_accel(int enable)

# Probe the CPU once at import, so the first digest does not pay for CPUID.
cdef bint _accelerated = fc_sha256_set_accel(1)


def sha256(bytes data not None) -> bytes:
    """Return the 32-byte SHA-256 digest of `data`."""
    cdef unsigned char out[32]
    cdef const unsigned char *p = data
    cdef size_t n = len(data)
    with nogil:
        fc_sha256(p, n, out)
    return out[:32]


def sha256_prefix64(bytes data not None) -> int:
    """Return the first 8 bytes of SHA-256(`data`) as a big-endian unsigned integer."""
    cdef const unsigned char *p = data
    return fc_sha256_prefix64(p, len(data))


def accelerated() -> bool:
    """True if this module's digests use the x86 SHA extensions (SHA-NI)."""
    return _accelerated


def set_acceleration(bint enabled) -> bool:
    """Allow or forbid the SHA-NI code path in this module; return whether it is in use.

    For tests and measurements: both paths must give the same digests. It only affects
    this module (each extension that includes `_sha256.h` has its own copy of the flag).
    """
    global _accelerated
    _accelerated = fc_sha256_set_accel(enabled)
    return _accelerated


def siphash24(bytes key not None, bytes data not None) -> int:
    """SipHash-2-4 of `data` under the 16-byte `key` (k0, k1: little-endian halves)."""
    if len(key) != 16:
        raise ValueError(f"SipHash takes a 16-byte key, not {len(key)} bytes")
    cdef uint64_t k0 = int.from_bytes(key[:8], "little")
    cdef uint64_t k1 = int.from_bytes(key[8:], "little")
    cdef const unsigned char *p = data
    return fc_siphash24(k0, k1, p, len(data))

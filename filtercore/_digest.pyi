"""Type stub for the Cython extension `filtercore._digest` (see `_digest.pyx`)."""

def sha256(data: bytes) -> bytes:
    """Return the 32-byte SHA-256 digest of `data`."""

def sha256_prefix64(data: bytes) -> int:
    """Return the first 8 bytes of SHA-256(`data`) as a big-endian unsigned integer."""

def accelerated() -> bool:
    """True if this module's digests use the x86 SHA extensions (SHA-NI)."""

def set_acceleration(enabled: bool) -> bool:
    """Allow or forbid the SHA-NI code path in this module; return whether it is in use."""

def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of `data` under the 16-byte `key` (k0, k1: little-endian halves)."""

"""The C SHA-256 in `filtercore/_sha256.h`, through `filtercore._digest`.

Both implementations in the header run every test: the SHA-NI one (on CPUs that have the
x86 SHA extensions; elsewhere the "accelerated" run uses the portable code again) and the
portable C one.

Known-answer vectors are the FIPS 180-2 / 180-4 examples (NIST "Secure Hash Standard",
Appendix B of FIPS 180-2, and the CSRC example values for SHA-256); random inputs are
checked against `hashlib`, covering every padding case (lengths 0..300 cross the 55/56 and
63/64 byte block boundaries several times).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtercore._digest import accelerated, set_acceleration, sha256, sha256_prefix64


@pytest.fixture(params=["accelerated", "portable"], autouse=True)
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run every test with the SHA-NI path (where the CPU has it) and the portable C path."""
    default = accelerated()
    active = set_acceleration(request.param == "accelerated")
    assert active == (request.param == "accelerated" and default)
    yield request.param
    set_acceleration(True)


FIPS_VECTORS = [
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


@pytest.mark.parametrize(("message", "digest"), FIPS_VECTORS, ids=lambda v: str(len(v)))
def test_fips_known_answers(message: bytes, digest: str) -> None:
    assert sha256(message).hex() == digest
    assert sha256_prefix64(message) == int(digest[:16], 16)


@pytest.mark.parametrize("length", range(0, 300))
def test_every_length_up_to_300_matches_hashlib(length: int) -> None:
    message = bytes((i * 131 + length) & 0xFF for i in range(length))
    assert sha256(message) == hashlib.sha256(message).digest()


@given(message=st.binary(min_size=0, max_size=300))
def test_random_inputs_match_hashlib(message: bytes) -> None:
    expected = hashlib.sha256(message).digest()
    assert sha256(message) == expected
    assert sha256_prefix64(message) == int.from_bytes(expected[:8], "big")


def test_prefix64_is_unsigned_and_64_bits() -> None:
    # SHA-256("abc") starts with 0xba, so a signed conversion would come out negative.
    value = sha256_prefix64(b"abc")
    assert value == 0xBA7816BF8F01CFEA
    assert 0 <= value < 1 << 64


def test_only_bytes_are_accepted() -> None:
    with pytest.raises(TypeError):
        sha256("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sha256(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sha256_prefix64(bytearray(b"abc"))  # type: ignore[arg-type]

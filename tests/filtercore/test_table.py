"""The hashed table itself: the keyed hash, sorted storage, directory, markers, sizes."""

from __future__ import annotations

import random

import pytest

from filtercore._digest import siphash24
from filtercore._table import DomainTable, MatchCore, TableBuilder, normalize
from filtercore.errors import InvalidNameError

SECRET = bytes(range(16))


def test_siphash_matches_the_reference_vectors() -> None:
    # SipHash-2-4 paper, appendix A: key 00..0f; messages "" and 00..0e.
    builder = TableBuilder(SECRET)
    assert builder.hash_name("") == 0x726FDB47DD0E0E31
    assert builder.hash_name("".join(chr(i) for i in range(15))) == 0xA129CA6149BE45E5
    # The same C code, for Python callers (the query log's pseudonyms).
    assert siphash24(SECRET, b"") == 0x726FDB47DD0E0E31
    assert siphash24(SECRET, bytes(range(15))) == 0xA129CA6149BE45E5
    with pytest.raises(ValueError, match="16-byte key"):
        siphash24(b"short", b"")


def test_the_secret_changes_every_key() -> None:
    a = TableBuilder(SECRET).hash_name("example.com")
    b = TableBuilder(bytes(16)).hash_name("example.com")
    assert a != b


def test_every_added_key_is_found_and_absent_keys_are_not() -> None:
    rng = random.Random(7)
    builder = TableBuilder(SECRET, markers=False)
    keys = {rng.getrandbits(64) for _ in range(20_000)}
    for i, key in enumerate(sorted(keys)):
        builder.add_key(key, 1 + i % 100, i + 1)
    table = builder.build(lambda a, b: a)
    assert len(table) == len(keys)
    for key in keys:
        slot, group, _children, line = table.lookup_key(key)
        assert table.slot_info(slot)[0] == key
        assert 1 <= group <= 100 and line >= 1
    misses = [k for k in (rng.getrandbits(64) for _ in range(20_000)) if k not in keys]
    assert all(table.lookup_key(k) is None for k in misses)


def test_extreme_keys_land_in_the_first_and_last_bucket() -> None:
    builder = TableBuilder(SECRET, markers=False)
    for key in (0, 1, 2**63, 2**64 - 1):
        builder.add_key(key, 1, 1)
    table = builder.build(lambda a, b: a)
    for key in (0, 1, 2**63, 2**64 - 1):
        assert table.lookup_key(key) is not None
    assert table.lookup_key(2**64 - 2) is None


def test_empty_table_finds_nothing() -> None:
    table = TableBuilder(SECRET).build(lambda a, b: a)
    assert len(table) == 0
    assert table.lookup_key(12345) is None
    core = MatchCore(table, table, [0], [0], [0])
    assert core.walk("example.com") == -1


def test_suffixes_become_markers_with_the_children_bit() -> None:
    builder = TableBuilder(SECRET)
    builder.add_name("a.b.example.com", 1, 10)
    table = builder.build(lambda a, b: a)
    assert len(table) == 4  # the name + b.example.com, example.com, com
    _slot, group, children, line = table.lookup_key(builder.hash_name("example.com"))
    assert (group, children, line) == (0, True, 0)
    _slot, group, children, line = table.lookup_key(builder.hash_name("a.b.example.com"))
    assert (group, children, line) == (1, False, 10)


def test_duplicate_keys_merge_through_the_callback() -> None:
    builder = TableBuilder(SECRET)
    builder.add_name("example.com", 2, 5)
    builder.add_name("example.com", 1, 9)
    builder.add_name("example.com", 1, 3)
    calls: list[tuple[int, int]] = []

    def merge(a: int, b: int) -> int:
        calls.append((a, b))
        return 7

    table = builder.build(merge)
    _slot, group, _children, line = table.lookup_key(builder.hash_name("example.com"))
    # The lowest group's earliest line is kept; the other group is merged in once.
    assert calls == [(1, 2)]
    assert (group, line) == (7, 3)


def test_table_costs_at_most_sixteen_bytes_per_entry() -> None:
    builder = TableBuilder(SECRET, markers=False)
    rng = random.Random(1)
    n = 100_000
    for i in range(n):
        builder.add_key(rng.getrandbits(64), 1, i + 1)
    table = builder.build(lambda a, b: a)
    assert table.table_bytes() / n <= 16
    assert table.side_bytes() / n == 4


def test_from_arrays_wraps_the_same_buffers() -> None:
    builder = TableBuilder(SECRET)
    builder.add_name("example.com", 1, 1)
    table = builder.build(lambda a, b: a)
    copy = DomainTable.from_arrays(table.k0, table.k1, *table.buffers(), table.shift)
    assert copy.lookup_key(builder.hash_name("example.com")) == table.lookup_key(
        builder.hash_name("example.com")
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("  www.example.com.\n", "www.example.com"),
        ("a_b.example", "a_b.example"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_c_normalisation_matches_the_contract(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty name"),
        ("a..b", "empty label"),
        (".a.b", "empty label"),
        ("a" * 64 + ".com", "longer than 63"),
        ("exa mple.com", "character not allowed"),
        ("xn--zz.com", "bad A-label"),
        (("a" * 60 + ".") * 5, "longer than 253"),
    ],
)
def test_c_normalisation_rejects_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNameError, match=reason):
        normalize(raw)

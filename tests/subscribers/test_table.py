"""The serving table (dns_resolver/fast/_subtable.h): exact IPv4, longest IPv6 prefix, in-place
changes seen by another mapping at once, deletion without tombstones, growth."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from dns_resolver.fast._subtable import DROPPED, SubscriberTable, capacity_for
from subscribers.addresses import canonical, containing, table_key


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def put(table: SubscriberTable, address: str, policy: int, lists: int = 0) -> SubscriberTable:
    return table.set(*table_key(canonical(address)), policy, lists)


def test_ipv4_exact_and_ipv6_longest_prefix(tmp_path: Path) -> None:
    writer = SubscriberTable.create(str(tmp_path / "t"), 1024)
    reader = SubscriberTable.open(str(tmp_path / "t"))
    put(writer, "198.51.100.7", 1)
    put(writer, "2001:db8:7::/48", 2)
    put(writer, "2001:db8:7:100::/56", 3, lists=9)
    assert reader.lookup(packed("198.51.100.7")) == (1, 0)
    assert reader.lookup(packed("198.51.100.8")) is None
    assert reader.lookup(packed("2001:db8:7:1ff::1")) == (3, 9)  # inside the /56
    assert reader.lookup(packed("2001:db8:7:200::1")) == (2, 0)  # only the /48
    assert reader.lookup(packed("2001:db8:8::1")) is None
    assert writer.remove(*table_key("2001:db8:7:100::/56"))
    assert reader.lookup(packed("2001:db8:7:1ff::1")) == (2, 0)
    assert not writer.remove(*table_key("2001:db8:7:100::/56"))
    with pytest.raises(ValueError, match="read-only"):
        reader.set(32, 1, 0, 0)


def test_changes_against_a_model_with_deletions_and_growth(tmp_path: Path) -> None:
    """Random sets and removes (many probe collisions in a small table) agree with a dict;
    growth replaces the file and retires the old one, whose readers map the new one."""
    rng = random.Random(16)
    path = str(tmp_path / "t")
    table = SubscriberTable.create(path, 1024)
    reader = SubscriberTable.open(path)
    model: dict[str, int] = {}
    pool = [f"10.0.{i // 256}.{i % 256}" for i in range(3000)]
    for step in range(20_000):
        address = rng.choice(pool)
        if rng.random() < 0.6:
            policy = rng.randrange(1, 60)
            table = put(table, address, policy)
            model[address] = policy
        else:
            assert table.remove(*table_key(canonical(address))) == (address in model)
            model.pop(address, None)
        if step % 997 == 0 and reader.retired:
            reader = SubscriberTable.open(path)
    assert table.capacity > 1024 and table.count == len(model)
    assert reader.retired or reader.capacity == table.capacity
    reader = SubscriberTable.open(path)
    for address in pool:
        found = reader.lookup(packed(address))
        assert (found[0] if found else None) == model.get(address), address


def test_create_with_entries_and_sizes(tmp_path: Path) -> None:
    entries = [(32, i, 1, 0) for i in range(1, 5001)]
    table = SubscriberTable.create(str(tmp_path / "t"), capacity_for(len(entries)), entries)
    assert table.count == 5000 and table.capacity == 16384
    assert table.nbytes == 64 + 16 * 16384
    assert SubscriberTable.open(str(tmp_path / "t")).lookup(bytes([0, 0, 0, 77])) == (1, 0)
    with pytest.raises(ValueError, match="too small"):
        table.fill([(32, 10**6 + i, 1, 0) for i in range(10_000)])


def test_addresses() -> None:
    assert canonical(" 198.51.100.7 ") == "198.51.100.7/32"
    assert canonical("2001:db8:7:0::/56") == "2001:db8:7::/56"
    with pytest.raises(ValueError, match="a /32"):
        canonical("198.51.100.0/24")
    with pytest.raises(ValueError, match="/48 to /64"):
        canonical("2001:db8::/32")
    with pytest.raises(ValueError, match="not an IP"):
        canonical("example.com")
    assert containing("2001:db8:7:1ff::1")[0] == "2001:db8:7:1ff::/64"
    assert containing("2001:db8:7:1ff::1")[-1] == "2001:db8:7::/48"
    assert table_key("2001:db8:7::/56") == (56, 0x20010DB800070000)


def test_remap_renumbers_in_place_and_drops_unknown_policies(tmp_path: Path) -> None:
    """A reload that reorders the policies renumbers every entry, seen by another mapping;
    an index with no new place becomes DROPPED, which no reader serves as a policy."""
    writer = SubscriberTable.create(str(tmp_path / "t"), 1024)
    reader = SubscriberTable.open(str(tmp_path / "t"))
    put(writer, "198.51.100.1", 0)
    put(writer, "198.51.100.2", 1, lists=4)
    put(writer, "2001:db8:7::/56", 2)
    assert writer.remap([2, 0]) == 3  # 0 -> 2, 1 -> 0, 2 (not in the list) -> DROPPED
    assert reader.lookup(packed("198.51.100.1")) == (2, 0)
    assert reader.lookup(packed("198.51.100.2")) == (0, 4)
    assert reader.lookup(packed("2001:db8:7::1")) == (DROPPED, 0)
    assert writer.remap([0, 1, 2]) == 0

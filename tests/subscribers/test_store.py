"""The subscribers' store on SQLite and PostgreSQL: the change log every node tails, and
the serving table a service keeps equal to it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from reports.store import NotFound
from subscribers.input import SubscriberInput
from subscribers.service import SubscriberService
from subscribers.store import SubscriberStore

POLICIES = ["child", "default", "teen"]


@pytest.fixture
def store(database_url: str) -> Iterator[SubscriberStore]:
    s = SubscriberStore(database_url)
    yield s
    s.close()


def sub(sid: str, policy: str, *addresses: str, block: tuple[str, ...] = ()) -> SubscriberInput:
    return SubscriberInput(sid, policy, tuple(addresses), (), block)


def lookup(service: SubscriberService, address: str) -> tuple[int, int] | None:
    assert service.table is not None
    return service.table.lookup(ipaddress.ip_address(address).packed)


def test_put_get_delete_and_the_table(store: SubscriberStore, tmp_path: Path) -> None:
    service = SubscriberService(store, str(tmp_path / "t"), POLICIES)
    service.build()
    before, after = store.put(sub("sub42", "child", "198.51.100.7/32", "2001:db8:7::/56"), "alice")
    assert before is None
    assert after["addresses"] == ["198.51.100.7/32", "2001:db8:7::/56"]
    assert after["updated_by"] == "alice"
    assert service.catch_up() == 2
    assert lookup(service, "198.51.100.7") == (0, 0)
    assert lookup(service, "2001:db8:7:ff::1") == (0, 0)

    # Replacing: a new policy, own lists, one address moved.
    store.put(sub("sub42", "teen", "198.51.100.8/32", block=("example.org",)), "bob")
    service.catch_up()
    assert lookup(service, "198.51.100.7") is None
    assert lookup(service, "2001:db8:7::1") is None
    policy, lists_id = lookup(service, "198.51.100.8") or (None, 0)
    assert policy == 2 and lists_id > 0
    assert store.own_lists(lists_id) == (frozenset(), frozenset({"example.org"}))

    # Another subscriber takes the address over.
    store.put(sub("sub43", "default", "198.51.100.8/32"), "alice")
    service.catch_up()
    assert lookup(service, "198.51.100.8") == (1, 0)
    assert store.get("sub42")["addresses"] == []
    assert store.holder(["198.51.100.8/32"])[1]["id"] == "sub43"  # type: ignore[index]

    assert store.delete("sub43")["policy"] == "default"
    service.catch_up()
    assert lookup(service, "198.51.100.8") is None
    with pytest.raises(NotFound):
        store.get("sub43")
    # A fresh build from the store agrees with the tailed table.
    rebuilt = SubscriberService(store, str(tmp_path / "t2"), POLICIES)
    rebuilt.build()
    assert sorted(rebuilt.table.entries()) == sorted(service.table.entries())  # type: ignore[union-attr]


def test_radius_sessions_move_and_stop(store: SubscriberStore, tmp_path: Path) -> None:
    service = SubscriberService(store, str(tmp_path / "t"), POLICIES)
    service.build()
    store.put(sub("sub42", "child", "2001:db8:9::/48"), "alice")
    assert not store.session("nobody", "s1", ["127.0.0.42/32"])
    assert store.session("sub42", "s1", ["127.0.0.42/32"])
    service.catch_up()
    assert lookup(service, "127.0.0.42") == (0, 0)
    store.session("sub42", "s1", ["127.0.0.43/32"])  # Interim-Update: moved
    service.catch_up()
    assert lookup(service, "127.0.0.42") is None and lookup(service, "127.0.0.43") == (0, 0)
    # A PUT keeps the live session (with the new policy) and replaces provisioned ones.
    store.put(sub("sub42", "teen"), "alice")
    service.catch_up()
    assert lookup(service, "127.0.0.43") == (2, 0)
    assert lookup(service, "2001:db8:9::1") is None
    store.session("sub42", "s1", [], stop=True)
    service.catch_up()
    assert lookup(service, "127.0.0.43") is None
    assert store.get("sub42")["addresses"] == []


def test_import_batches_and_a_pruned_log(store: SubscriberStore, tmp_path: Path) -> None:
    service = SubscriberService(store, str(tmp_path / "t"), POLICIES)
    service.build()
    rows = (sub(f"s{i}", "child", f"10.1.{i // 256}.{i % 256}/32") for i in range(3000))
    assert store.import_rows(rows, "cli", batch=1000) == 3000
    assert store.count() == (3000, 3000)
    service.catch_up()
    assert service.table.count == 3000  # type: ignore[union-attr]
    # A node further behind than the log reaches rebuilds from the tables.
    late = SubscriberService(store, str(tmp_path / "late"), POLICIES)
    late.build()
    store.import_rows((sub(f"s{i}", "teen") for i in range(1000)), "cli")
    assert store.prune_changes(keep=10) > 0
    resyncs = late.resyncs
    late.catch_up()
    assert late.resyncs == resyncs + 1
    assert late.table.count == 2000  # type: ignore[union-attr]
    assert lookup(late, "10.1.0.5") is None and lookup(late, "10.1.7.208") == (0, 0)

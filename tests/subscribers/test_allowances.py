"""Daily allowances per subscriber id in the subscribers' database (SQLite, PostgreSQL):
two stores stand for two nodes; a subscriber's minutes are one allowance whichever node
and address counted them; the migrations and the tables agree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from subscribers.allowances import SubscriberAllowances
from subscribers.input import SubscriberInput
from subscribers.models import metadata
from subscribers.store import SubscriberStore
from tests.dns_resolver.harness import eventually, free_port

DAY = "2026-12-04"


@pytest.fixture
def store(database_url: str) -> Iterator[SubscriberStore]:
    s = SubscriberStore(database_url)
    yield s
    s.close()


def node(store: SubscriberStore) -> SubscriberAllowances:
    # Rounds only when the test asks (flush), so every step is deterministic.
    return SubscriberAllowances(SubscriberStore(store.url), flush_interval=3600)


def test_the_migrations_make_the_tables_the_code_uses(store: SubscriberStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": "subscribers_alembic_version"}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_one_allowance_across_nodes_and_addresses(store: SubscriberStore) -> None:
    store.put(SubscriberInput("kid", "child", ("127.0.0.81/32", "2001:db8:81::/56")), "t")
    a, b = node(store), node(store)
    try:
        # Before its holder is known the first minute waits under the address...
        assert a.use(DAY, "127.0.0.81", "games", 600, 3) == (True, 1)
        a.flush()  # ...and is the subscriber's once known
        assert store.minutes(["kid"], DAY) == {(DAY, "kid", "games"): 1}
        assert a.use(DAY, "127.0.0.81", "games", 600, 3) == (True, 1)  # the same minute
        # Another node, another address of the same subscriber (inside its /56).
        b.flush()
        assert b.use(DAY, "2001:db8:81:7::1", "games", 601, 3) == (True, 1)
        b.flush()
        assert b.use(DAY, "2001:db8:81:7::1", "games", 601, 3) == (True, 2)
        assert b.use(DAY, "2001:db8:81:7::1", "games", 602, 3) == (True, 3)
        b.flush()
        a.flush()  # reads back the other node's minutes
        assert a.used(DAY, "127.0.0.81", "games") == 3
        assert a.use(DAY, "127.0.0.81", "games", 603, 3) == (False, 3)
        assert b.use(DAY, "2001:db8:81:7::1", "games", 603, 3) == (False, 3)
        # The same minute counted on two nodes is one minute.
        assert a.use(DAY, "127.0.0.81", "other", 603, 5) == (True, 1)
        assert b.use(DAY, "2001:db8:81:7::1", "other", 603, 5) == (True, 1)
        a.flush()
        b.flush()
        assert store.minutes(["kid"], DAY)[(DAY, "kid", "other")] == 1
        assert store.prune_minutes("2026-12-05") == 4
    finally:
        a.close()
        b.close()


def test_an_address_nobody_holds_counts_for_nobody(store: SubscriberStore) -> None:
    allowances = node(store)
    try:
        assert allowances.use(DAY, "127.0.0.99", "games", 600, 1) == (True, 1)
        allowances.flush()
        assert store.minutes(["127.0.0.99"], DAY) == {}
        assert allowances.used(DAY, "127.0.0.99", "games") == 0
    finally:
        allowances.close()


def test_a_spent_allowance_stays_spent_after_idling(store: SubscriberStore) -> None:
    """Counts are read back only for subscribers active lately; one idle longer keeps its
    last count, so coming back does not start a fresh minute."""
    store.put(SubscriberInput("kid", "child", ("127.0.0.81/32",)), "t")
    store.put(SubscriberInput("sis", "child", ("127.0.0.82/32",)), "t")
    allowances = node(store)
    try:
        allowances.use(DAY, "127.0.0.81", "games", 600, 2)
        allowances.flush()
        assert allowances.use(DAY, "127.0.0.81", "games", 601, 2) == (True, 2)
        allowances.flush()
        allowances.use(DAY, "127.0.0.82", "games", 614, 2)
        allowances.flush()  # sis known: its next minute makes it the only one active
        allowances.use(DAY, "127.0.0.82", "games", 615, 2)
        allowances.flush()
        assert allowances.use(DAY, "127.0.0.81", "games", 616, 2) == (False, 2)
    finally:
        allowances.close()


def test_minutes_wait_in_memory_while_the_database_is_unreachable() -> None:
    """Fault injection: a PostgreSQL nobody listens on. Rounds fail and are counted; the
    queries are still decided (counted under the address) and close() does not raise."""
    store = SubscriberStore(
        f"postgresql://filterdns@127.0.0.1:{free_port()}/none", run_migrations=False
    )
    allowances = SubscriberAllowances(store, flush_interval=0.05)
    try:
        assert allowances.use(DAY, "127.0.0.81", "games", 600, 2) == (True, 1)
        assert eventually(lambda: allowances.failures >= 2)
        assert allowances.flushes == 0
        assert allowances.use(DAY, "127.0.0.81", "games", 601, 2) == (True, 2)
        assert allowances.use(DAY, "127.0.0.81", "games", 602, 2) == (False, 2)
    finally:
        allowances.close()
        store.close()

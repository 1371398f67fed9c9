"""The storage layer, run on SQLite and on PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from filtercore.categories import CategoryMap
from reports.models import Base
from reports.store import Conflict, NotFound, Store
from reports.submission import parse_decision, parse_submission
from reports.tokens import hash_token

CATEGORIES = CategoryMap.load()


def sub(target: str, kind: str = "report", **extra: str):
    return parse_submission({"target": target, "kind": kind, **extra}, CATEGORIES)


def decision(action: str, reason: str = "checked", category: str | None = None):
    data = {"action": action, "reason": reason}
    if category:
        data["category"] = category
    return parse_decision(data, CATEGORIES)


def test_migrations_create_the_models_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert {"reports", "decisions", "tokens", "overrides", "alembic_version"} <= tables
    assert version == "0002"
    # Columns, types and indexes agree (server-side details like constraint names aside).
    assert [
        d for d in diff if d[0] in ("add_table", "remove_table", "add_column", "remove_column")
    ] == []


def test_migrating_twice_is_harmless(database_url: str) -> None:
    Store(database_url).close()
    again = Store(database_url)
    assert again.queue() == ([], 0)
    again.close()


def test_the_leads_migration_keeps_the_queue_and_marks_it_public(database_url: str) -> None:
    from reports.store import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reports (target, host, kind, count, status, created_at, updated_at)"
                " VALUES ('old.example', 'old.example', 'report', 3, 'open', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    upgraded = Store(database_url)
    (row,), _ = upgraded.queue()
    assert (row["host"], row["count"], row["source"], row["evidence"]) == (
        "old.example", 3, "public", None
    )
    upgraded.close()


def test_a_lead_is_stored_with_its_evidence_and_merged_while_open(store: Store) -> None:
    evidence = {"client_networks": 25, "signals": [{"signal": "cname_target"}]}
    first = store.submit_lead("new.example", "gambling", evidence)
    again = store.submit_lead("new.example", "gambling", {**evidence, "client_networks": 40})
    report = store.submit(sub("new.example"), "192.0.2.0")
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert report.id != first.id  # a public report of the same host is its own item
    rows, total = store.queue(kind="lead")
    assert total == 1
    (lead,) = rows
    assert (lead["kind"], lead["source"], lead["category"], lead["count"]) == (
        "lead", "observed", "gambling", 2
    )
    assert lead["evidence"]["client_networks"] == 40
    assert store.report(report.id)["source"] == "public"
    decided = store.decide(first.id, decision("block", category="gambling"), "alice")
    assert decided.override is not None and decided.override["report_id"] == first.id
    assert store.submit_lead("new.example", "gambling", evidence).id != first.id


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    from reports.store import data_dir_url

    s = Store(data_dir_url(tmp_path))
    with s.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    s.close()


def test_duplicates_merge_with_a_count(store: Store) -> None:
    first = store.submit(sub("https://www.Example.org/page"), "192.0.2.0")
    second = store.submit(sub("https://www.example.org/page"), "198.51.100.0")
    appeal = store.submit(sub("www.example.org", "appeal"), "192.0.2.0")
    assert not first.duplicate and second.duplicate and second.id == first.id
    assert second.count == 2
    assert appeal.id != first.id
    rows, total = store.queue()
    assert total == 2
    assert rows[0]["count"] == 2 and rows[0]["target"] == "www.example.org/page"
    assert rows[0]["reporter"] == "192.0.2.0"


def test_queue_orders_by_count_then_age(store: Store) -> None:
    ids = [store.submit(sub(f"site{i}.example"), None).id for i in range(3)]
    store.submit(sub("site2.example"), None)
    rows, _ = store.queue()
    assert [r["id"] for r in rows] == [ids[2], ids[0], ids[1]]
    assert store.queue(kind="appeal") == ([], 0)
    assert [r["id"] for r in store.queue(limit=1, offset=1)[0]] == [ids[0]]


def test_concurrent_duplicate_flood_loses_nothing(store: Store) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.submit(sub("flood.example"), None), range(40)))
    assert len({r.id for r in results}) == 1
    rows, total = store.queue()
    assert total == 1 and rows[0]["count"] == 40
    assert sorted(r.count for r in results) == list(range(1, 41))


def test_decide_block_sets_an_override(store: Store) -> None:
    report = store.submit(sub("bad.example", category="porn"), None)
    done = store.decide(report.id, decision("block", "adult site", "adult"), "alice (token 1)")
    assert done.override["action"] == "block" and done.override["category"] == "adult"
    assert done.previous is None
    assert done.report["status"] == "decided"
    assert store.overrides()[0]["host"] == "bad.example"
    detail = store.report(report.id)
    assert detail["decisions"][0]["reviewer"] == "alice (token 1)"
    with pytest.raises(Conflict):
        store.decide(report.id, decision("reject"), "bob")
    # A new report of the same target opens a new entry (the old one is decided).
    assert store.submit(sub("bad.example"), None).id != report.id


def test_allow_replaces_a_block_override(store: Store) -> None:
    first = store.submit(sub("essex.example"), None)
    store.decide(first.id, decision("block", "x", "adult"), "alice")
    appeal = store.submit(sub("essex.example", "appeal"), None)
    done = store.decide(appeal.id, decision("allow", "a county council"), "bob")
    assert done.previous["action"] == "block"
    assert [o["action"] for o in store.overrides()] == ["allow"]
    assert store.overrides()[0]["category"] is None


def test_reject_changes_no_override(store: Store) -> None:
    report = store.submit(sub("fine.example"), None)
    done = store.decide(report.id, decision("reject", "not harmful"), "alice")
    assert done.override is None and store.overrides() == []


def test_unknown_ids(store: Store) -> None:
    with pytest.raises(NotFound):
        store.report(99)
    with pytest.raises(NotFound):
        store.decide(99, decision("reject"), "x")
    with pytest.raises(NotFound):
        store.revoke_token(99)
    with pytest.raises(NotFound):
        store.delete_override("nothing.example")


def test_tokens_are_hashed_and_revocable(store: Store) -> None:
    token_id, token = store.create_token("reviewer", "alice")
    assert token.startswith("fdns_") and len(token) > 40
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM tokens")).scalar()
    assert stored == hash_token(token) and token not in stored
    who = store.authenticate(token)
    assert who is not None and (who.id, who.role, who.name) == (token_id, "reviewer", "alice")
    assert store.authenticate(token + "x") is None
    store.revoke_token(token_id)
    assert store.authenticate(token) is None
    assert store.tokens()[0]["revoked_at"] is not None
    with pytest.raises(ValueError):
        store.create_token("root", "x")


def test_sql_ish_strings_are_stored_verbatim(store: Store) -> None:
    comment = "'; DROP TABLE reports; -- \" OR 1=1 /* ünïcødé 😀"
    report = store.submit(sub("quote.example", comment=comment), None)
    assert store.report(report.id)["comment"] == comment
    assert store.queue()[1] == 1


def test_delete_override(store: Store) -> None:
    report = store.submit(sub("gone.example"), None)
    store.decide(report.id, decision("allow", "fine"), "alice")
    assert store.delete_override("gone.example")["action"] == "allow"
    assert store.overrides() == []


def test_overrides_version_changes_with_every_change(store: Store) -> None:
    empty = store.overrides_version()
    report = store.submit(sub("v.example"), None)
    store.decide(report.id, decision("allow", "fine"), "alice")
    one = store.overrides_version()
    assert one != empty and one[0] == 1
    store.delete_override("v.example")
    assert store.overrides_version()[0] == 0

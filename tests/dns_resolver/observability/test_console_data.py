"""The console's data: the query-log store (search, retention by age and rows), the
overview aggregates (Space-Saving, windows, bounded clients) and the query log's sinks."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from dnslib import QTYPE

from dns_resolver.observability import querystore
from dns_resolver.observability.querylog import QueryLog
from dns_resolver.observability.querystats import (
    RECENT_CLIENTS,
    TOP_K,
    QueryStats,
    SpaceSaving,
    StatsGroup,
)
from dns_resolver.observability.querystore import COLUMNS, QueryStore, Search, day_of
from filtercore.verdict import NO_MATCH


def row(ts: float, name: str, result: str = "allowed", client: str = "192.0.2.1", **kw: object):
    values = dict.fromkeys(COLUMNS)
    values.update(ts=ts, client=client, qname=name, qtype="A", result=result, cached=0,
                  latency_ms=1.0, **kw)  # fmt: skip
    return tuple(values[c] for c in COLUMNS)


def test_search_filters_newest_first_across_days(tmp_path: Path) -> None:
    store = QueryStore(tmp_path)
    now = time.time()
    store.add([row(now - 86400 - 5, "old.example", "blocked", category="adult")])
    store.add([row(now - 3 + i, f"n{i}.example") for i in range(3)])
    store.add([row(now, "kids.example", "blocked", client="192.0.2.9", category="adult",
                   rule="kids.example", policy="child")])  # fmt: skip
    assert len(store.days()) == 2
    names = [r["qname"] for r in store.search(Search(limit=10))]
    assert names == ["kids.example", "n2.example", "n1.example", "n0.example", "old.example"]
    blocked = store.search(Search(result="blocked", limit=10))
    assert [r["qname"] for r in blocked] == ["kids.example", "old.example"]
    assert store.search(Search(name="KIDS", limit=5))[0]["rule"] == "kids.example"
    assert [r["qname"] for r in store.search(Search(client="192.0.2.9"))] == ["kids.example"]
    assert store.search(Search(policy="child"))[0]["policy"] == "child"
    assert [r["qname"] for r in store.search(Search(since=now - 10, until=now - 1.5))] == [
        "n1.example", "n0.example",
    ]  # fmt: skip
    assert len(store.search(Search(limit=2))) == 2
    assert store.search(Search(name="nowhere")) == []


def test_retention_drops_whole_days_by_age_and_rows(tmp_path: Path) -> None:
    now = time.time()
    store = QueryStore(tmp_path, retention_days=3, max_rows=250)
    store.add([row(now - 10 * 86400, "ancient.example")])
    store.add([row(now - 2 * 86400, "recent.example")])
    store.add([row(now, "today.example")])
    assert store.days() == [day_of(now - 2 * 86400), day_of(now)]  # older than 3 days: gone
    store.add([row(now - 86400, f"y{i}.example") for i in range(200)])
    store.add([row(now, f"t{i}.example") for i in range(100)])  # 302 rows > 250
    assert day_of(now - 2 * 86400) not in store.days()
    assert day_of(now) in store.days()  # the newest day is never dropped
    assert store.stats()["rows"] <= 301


def indexed(path: Path) -> bool:
    with closing(sqlite3.connect(path)) as conn:
        return bool(conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                 "AND name LIKE 'q_%'").fetchone()[0])  # fmt: skip


def test_parts_are_indexed_when_full_and_carried_on_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(querystore, "PART_ROWS", 10)
    now = time.time()
    store = QueryStore(tmp_path)
    for batch in range(5):  # 25 rows: two full parts, the third open
        store.add([row(now - 100 + batch * 5 + i, f"b{batch}-{i}.example") for i in range(5)])
    files = sorted(tmp_path.glob("*.sqlite"))
    assert [p.name[11:] for p in files] == ["0000.sqlite", "0001.sqlite", "0002.sqlite"]
    assert [indexed(p) for p in files] == [True, True, False]
    names = [r["qname"] for r in store.search(Search(limit=100))]
    assert len(names) == 25 and names[0] == "b4-4.example" and names[-1] == "b0-0.example"
    assert [r["qname"] for r in store.search(Search(name="b2-", limit=100))] == [
        f"b2-{i}.example" for i in reversed(range(5))
    ]
    store.close()
    again = QueryStore(tmp_path)  # a restart: the open part is carried on
    again.add([row(now, "after.example")])
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == [p.name for p in files]
    assert again.search(Search(limit=1))[0]["qname"] == "after.example"
    assert again.stats()["rows"] == 26
    again.close()


def test_space_saving_keeps_the_heavy_hitters() -> None:
    sketch = SpaceSaving(k=10)
    for i in range(5000):
        sketch.add(f"noise{i}")
        if i % 10 == 0:
            sketch.add("heavy")
    assert len(sketch.counts) < 20  # at most 2k between trims
    assert sketch.top(1)[0][0] == "heavy" and sketch.top(1)[0][1] >= 500
    other = SpaceSaving(k=10)
    other.add("heavy", 100)
    sketch.merge(other)
    assert len(sketch.counts) <= 10 and sketch.top(1)[0][1] >= 600


def test_stats_windows_and_bounded_memory() -> None:
    stats = QueryStats()
    now = time.time()
    stats.add([row(now - 2 * 3600, "yesterday.example")])
    stats.add([row(now - 1, "a.example"), row(now, "ads.example", "blocked", category="ads",
                                               policy="child")])  # fmt: skip
    hour = stats.summary("1h", now)
    assert hour["queries"] == 2 and hour["blocked"] == 1 and hour["blocked_share"] == 0.5
    assert hour["by_category"] == {"ads": 1} and hour["by_policy"] == {"child": 1}
    assert hour["top_blocked"] == [{"name": "ads.example", "count": 1}]
    assert stats.summary("24h", now)["queries"] == 3
    assert round(sum(p["qps"] for p in hour["series"]) * 60, 1) == 2  # qps rounded to 4 places
    stats.add([row(now, f"n{i}.example", client=f"10.0.{i // 250}.{i % 250}")
               for i in range(RECENT_CLIENTS + 50)])  # fmt: skip
    bucket = stats.fine.bucket(now)
    assert len(bucket.names.counts) < 2 * TOP_K and len(stats.clients) == RECENT_CLIENTS
    newest = stats.recent_clients(1)[0]["last_queries"][0]
    assert newest["name"] == f"n{RECENT_CLIENTS + 49}.example"


def test_workers_stats_merge_from_published_state() -> None:
    """Two workers' aggregates, one of them through its published state, read as one."""
    now = time.time()
    own, other = QueryStats(), QueryStats()
    own.add([row(now, "a.example", client="192.0.2.1"), row(now, "ads.example", "blocked")])
    other.add([row(now - 5, "a.example", client="192.0.2.1", policy="child", client_why="cidr")]
              + [row(now, "b.example", client="192.0.2.2") for _ in range(3)])  # fmt: skip
    group = StatsGroup(own, lambda: [QueryStats.from_state(other.state())])
    hour = group.summary("1h", now)
    assert hour["queries"] == 6 and hour["blocked"] == 1
    assert hour["top_queried"][:2] == [{"name": "b.example", "count": 3},
                                       {"name": "a.example", "count": 2}]  # fmt: skip
    assert round(sum(p["qps"] for p in hour["series"]) * 60, 1) == 6
    clients = {c["client"]: c for c in group.recent_clients()}
    assert clients["192.0.2.1"]["queries"] == 3 and clients["192.0.2.1"]["policy"] == "child"
    assert [q["name"] for q in clients["192.0.2.1"]["last_queries"]] == [
        "ads.example", "a.example", "a.example",
    ]  # fmt: skip


def test_search_reads_every_workers_folder(tmp_path: Path) -> None:
    now = time.time()
    first, second = QueryStore(tmp_path / "worker-0"), QueryStore(tmp_path / "worker-1")
    first.add([row(now - 3, "w0-old.example"), row(now, "w0-new.example")])
    second.add([row(now - 1, "w1.example", "blocked")])
    names = [r["qname"] for r in first.search(Search(limit=10))]
    assert names == ["w0-new.example", "w1.example", "w0-old.example"]
    assert [r["qname"] for r in second.search(Search(limit=2))] == names[:2]
    assert [r["qname"] for r in first.search(Search(result="blocked"))] == ["w1.example"]


def test_querylog_feeds_sinks_with_anonymised_rows(tmp_path: Path) -> None:
    got: list = []
    qlog = QueryLog(tmp_path / "q.log", anonymize="truncate")
    qlog.sinks.append(got.extend)
    qlog.describe_client = lambda client, category: ("child", "cidr", None)
    qlog.log("192.0.2.77", "www.example", QTYPE.A, "udp", "allowed", 0.002, verdict=NO_MATCH)
    line = json.loads(qlog._format((time.time(), "192.0.2.5", "c.example", 1, "udp",  # noqa: SLF001
                                    "cached", None, None, None, 0, 0.0, None, None)))  # fmt: skip
    qlog.log_formatted((json.dumps(line) + "\n").encode())
    qlog.flush()
    qlog.close()
    assert [r[2] for r in got] == ["www.example", "c.example"]
    first = dict(zip(COLUMNS, got[0], strict=True))
    assert first["client"] == "192.0.2.0" and first["policy"] == "child"
    assert first["qtype"] == "A" and first["latency_ms"] == 2.0
    second = dict(zip(COLUMNS, got[1], strict=True))
    assert second["client"] == "192.0.2.0" and second["cached"] == 1


NO_FIELDS = '"category":null,"list":null'


def c_line(client: str, name: str, result: str, fields: str = NO_FIELDS) -> bytes:
    """A line as the C fast path writes it (`FastPath._log`)."""
    return (
        f'{{"timestamp":"2026-12-04T10:00:00.250Z","client":"{client}","qname":"{name}",'
        f'"qtype":"A","protocol":"udp","result":"{result}",{fields},"rcode":null,'
        f'"duration_ms":0.5}}\n'
    ).encode()


def test_c_lines_get_the_real_clients_policy_and_are_anonymised_here(tmp_path: Path) -> None:
    """With sinks C writes clients as they are: the writer describes them (exact policy
    whatever `anonymize` is) and anonymises them, in the rows and in the file."""
    got: list = []
    qlog = QueryLog(tmp_path / "q.log", anonymize="hash")
    qlog.sinks.append(got.extend)
    asked: list = []

    def describe(client: str, category: str | None) -> tuple[str, str, str | None]:
        asked.append(client)
        return ("child" if client == "192.0.2.7" else "default", "cidr",
                "schedule=school" if category else None)  # fmt: skip

    qlog.describe_client = describe
    qlog.fast_upstream = lambda name, policy: "127.0.0.1:5300" if policy == "child" else None
    assert qlog.fast_path_settings()[0] == 2  # "none": C writes the address as it is
    qlog.log_formatted(
        c_line("192.0.2.7", "a.example", "allowed")
        + c_line("192.0.2.8", "a.example", "cached")
        + c_line("192.0.2.7", "bad.example", "blocked", '"category":"adult","list":"kids"')
        + c_line("192.0.2.7", 'q\\"uote.example', "blocked", '"category":"adult","list":"kids"')
        + b"not json\n"
    )
    qlog.close()
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in got]
    assert [r["qname"] for r in rows] == ["a.example", "a.example", "bad.example", 'q"uote.example']
    assert [r["policy"] for r in rows] == ["child", "default", "child", "child"]
    assert [r["decided_by"] for r in rows] == ["upstream", "cache", "schedule=school",
                                               "schedule=school"]  # fmt: skip
    assert rows[0]["upstream"] == "127.0.0.1:5300" and rows[0]["upstream_ms"] == 0.5
    assert rows[1]["upstream"] is None and rows[2]["category"] == "adult"
    assert rows[0]["client"] == rows[2]["client"] != rows[1]["client"]
    assert len(rows[0]["client"]) == 16 and "192.0.2" not in rows[0]["client"]
    assert rows[0]["ts"] == 1796378400.25
    text = (tmp_path / "q.log").read_text()
    assert "192.0.2" not in text and text.count(rows[0]["client"]) == 3
    assert [json.loads(line)["qname"] for line in text.splitlines()] == [
        "a.example", "a.example", "bad.example", 'q"uote.example',
    ]  # fmt: skip
    assert sorted(set(asked)) == ["192.0.2.7", "192.0.2.8"]

"""The console with `server.workers = 2` on a real `filterdns serve` (NSD upstream): the
overview counts the queries both workers answered, the query log finds them all, a
pause or a block-now is in force on both workers within 1 s, and so is a reviewer's
override.

Queries come from many loopback addresses (and dig's random source ports), so the
kernel's SO_REUSEPORT hash spreads them over both workers. Each worker writes its own
store folder (`worker-N`), which lets the test check that both answered, and answered
as the switch says: a worker left out of the sums or the switch could not pass unseen."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tests.dns_resolver.harness import NsdServer, ServerProcess, TestZone, eventually, free_port
from tests.reports.test_console_e2e import Api, console_config

BLOCKED = TestZone.BLOCKED.rstrip(".")
WWW = TestZone.WWW.rstrip(".")
CHILDREN = [f"127.0.0.{i}" for i in range(10, 40)]  # the child policy's 127.0.0.0/26
TEEN = "127.0.0.70"  # the teen policy's 127.0.0.64/26: blocks nothing by itself
ROUND = 10  # digs in a round: all 10 on one worker has odds of 1 in 512


def workers_config(tmp_path: Path) -> dict:
    config = console_config(tmp_path)
    config["server"]["workers"] = 2
    config["policies"] = {
        "child": {"clients": ["127.0.0.0/26"], "block": ["adult"]},
        "teen": {"clients": ["127.0.0.64/26"], "block": []},
    }
    return config


def worker_rows(server: ServerProcess, sql: str, *args: object) -> dict[str, int]:
    """`SELECT count(*) FROM q WHERE sql` in each worker's store folder."""
    out = {}
    for folder in sorted((server.workdir / "data" / "querylog.d").glob("worker-*")):
        out[folder.name] = 0
        for day in folder.glob("*.sqlite"):
            with closing(sqlite3.connect(f"file:{day}?mode=ro", uri=True)) as conn:
                found = conn.execute(f"SELECT count(*) FROM q WHERE {sql}", args).fetchone()
            out[folder.name] += found[0]
    return out


def a_round(server: ServerProcess, client: str, status: str, name: str = BLOCKED) -> bool:
    return all(server.dig(name, "A", "-b", client).status == status for _ in range(ROUND))


def test_two_workers_count_search_and_switch_together(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = filterdns_on_nsd(workers_config(tmp_path))
    admin = Api(server, "admin")
    for client in CHILDREN:
        assert server.dig(WWW, "A", "-b", client).status == "NOERROR"
        assert server.dig(BLOCKED, "A", "-b", client).status == "NXDOMAIN"
    sent = 2 * len(CHILDREN)

    # The overview adds up both workers: counters, results, policies and sketches.
    assert eventually(lambda: admin.get("/api/stats").json()["queries"] == sent, 10)
    stats = admin.get("/api/stats").json()
    assert stats["blocked"] == len(CHILDREN)
    assert stats["by_policy"] == {"child": sent}
    assert {"name": BLOCKED, "count": len(CHILDREN)} in stats["top_blocked"]
    assert {"name": WWW, "count": len(CHILDREN)} in stats["top_queried"]
    assert stats["rows"]["store_written"] == sent and stats["rows"]["querylog_dropped"] == 0
    clients = {c["client"] for c in admin.get("/api/clients").json()["clients"]}
    assert clients == set(CHILDREN)
    # ... and both workers did answer some of them.
    per_worker = worker_rows(server, "1")
    assert sorted(per_worker) == ["worker-0", "worker-1"] and all(per_worker.values())
    assert sum(per_worker.values()) == sent

    # The query log finds every row, whichever worker wrote it, newest first.
    rows = admin.get("/api/querylog", limit=1000).json()["rows"]
    assert len(rows) == sent
    assert [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True)
    blocked = admin.get("/api/querylog", name="blocked.filterdns", result="blocked").json()
    assert len(blocked["rows"]) == len(CHILDREN) and all(r["rule"] for r in blocked["rows"])

    # A pause lets the child's queries through on both workers within 1 s ...
    child = CHILDREN[0]
    since = time.time()
    assert admin.post("/api/policies/child/pause", {"minutes": 0.1}).status_code == 200
    assert eventually(lambda: a_round(server, child, "NOERROR"), 1.0)
    let_through = "qname = ? AND result != 'blocked' AND ts >= ?"
    assert eventually(lambda: all(worker_rows(server, let_through, BLOCKED, since).values()), 3)
    # ... and ends by itself on both.
    assert eventually(lambda: a_round(server, child, "NXDOMAIN"), 8)

    # A block-now of the teen policy blocks on both workers within 1 s.
    assert server.dig(BLOCKED, "A", "-b", TEEN).status == "NOERROR"
    since = time.time()
    r = admin.post("/api/policies/teen/block", {"category": "adult", "minutes": 5})
    assert r.status_code == 200
    assert eventually(lambda: a_round(server, TEEN, "NXDOMAIN"), 1.0)
    blocked_now = "client = ? AND result = 'blocked' AND ts >= ?"
    assert eventually(lambda: all(worker_rows(server, blocked_now, TEEN, since).values()), 3)

    # A reviewer's decision (an override in the data directory) blocks on both workers.
    assert server.dig(WWW, "A", "-b", TEEN).status == "NOERROR"
    since = time.time()
    report = admin.post("/api/reports", {"target": WWW, "kind": "report", "category": "adult"})
    assert report.status_code == 201, report.text
    decision = {"action": "block", "category": "adult", "reason": "a test"}
    assert admin.post(f"/api/reports/{report.json()['id']}/decision", decision).is_success
    assert eventually(lambda: a_round(server, TEEN, "NXDOMAIN", WWW), 3)
    overridden = "qname = ? AND decided_by = 'override' AND ts >= ?"
    assert eventually(lambda: all(worker_rows(server, overridden, WWW, since).values()), 3)


def test_the_upstreams_health_is_every_workers(
    filterdns_on_nsd: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    """An upstream that fails on both workers shows their failures added up, not worker
    0's alone."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: refused at once
    config = workers_config(tmp_path)
    config["upstream"] = {
        "servers": [dead, nsd_upstream.upstream],
        "max_failures": 2,
        "retry_dead_after": 600,
    }
    server = filterdns_on_nsd(config)
    admin = Api(server, "admin")
    for i, client in enumerate(CHILDREN):  # new names: each is forwarded, by both workers
        assert server.dig(f"n{i}.{WWW}", "A", "-b", client).status == "NXDOMAIN"

    def dead_one() -> dict:
        (found,) = [u for u in admin.get("/api/stats").json()["upstreams"] if u["name"] == dead]
        return found

    # Each worker counted two failures in a row before it set the upstream aside.
    assert eventually(lambda: dead_one()["failures"] == 4, 5), dead_one()
    assert dead_one()["healthy"] is False
    assert server.metric("filterdns_upstream_errors_total", upstream=dead) == 4

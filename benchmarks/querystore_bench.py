"""The console's query-log store at its target size: fill N rows (default 10 million,
spread over 7 days like a week of a busy network), then time typical searches.

    python -m benchmarks.querystore_bench --rows 10000000 --dir /tmp/qs

Rows go in through `QueryStore.add` in the writer's batch size, so the fill rate is the
rate the query log's writer thread can sustain. Prints one line per measure and a JSON
summary at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path

from dns_resolver.observability.querystore import QueryStore, Search

BATCH = 5000  # about what the writer drains every 0.5 s at 10,000 queries/s
DAYS = 7


def fill(store: QueryStore, rows: int, now: float, seed: int = 1) -> float:
    """Add `rows` synthetic rows over the last DAYS days; returns rows per second."""
    rng = random.Random(seed)
    names = [f"site{i}.example" for i in range(50_000)] + ["rare-needle.example"]
    blocked = [f"ads{i}.tracker.example" for i in range(2_000)]
    clients = [f"192.0.2.{i}" for i in range(200)]
    start = now - DAYS * 86400
    step = DAYS * 86400 / rows
    started = time.perf_counter()
    batch = []
    for i in range(rows):
        ts = start + i * step
        if rng.random() < 0.15:
            name, result, cat, rule = rng.choice(blocked), "blocked", "ads", "tracker.example"
        else:
            name, result, cat, rule = names[rng.randrange(50_000)], "allowed", None, None
        if i == rows // 2:
            name = "rare-needle.example"
        batch.append((
            ts, rng.choice(clients), name, "A", "udp", result, "NOERROR", cat, cat, rule,
            "child", "cidr", None, "list" if rule else "upstream", int(rng.random() < 0.5),
            "192.0.2.53:53", round(rng.random() * 20, 3), round(rng.random() * 15, 3),
        ))  # fmt: skip
        if len(batch) == BATCH:
            store.add(batch)
            batch = []
    store.add(batch)
    return rows / (time.perf_counter() - started)


def timed(store: QueryStore, search: Search, repeat: int = 5) -> tuple[float, int]:
    """Median milliseconds of `repeat` runs, and the rows found."""
    times = []
    found = 0
    for _ in range(repeat):
        t = time.perf_counter()
        found = len(store.search(search))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=Path("results/querystore"))
    parser.add_argument("--keep", action="store_true", help="reuse a filled --dir")
    args = parser.parse_args()
    now = time.time()
    if not args.keep and args.dir.exists():
        shutil.rmtree(args.dir)
    store = QueryStore(args.dir, retention_days=DAYS + 1, max_rows=args.rows * 2,
                       max_bytes=1 << 40)  # fmt: skip
    out: dict[str, object] = {"rows": args.rows}
    if not args.keep:
        rate = fill(store, args.rows, now)
        out["fill_rows_per_s"] = round(rate)
        print(f"filled {args.rows} rows at {rate:,.0f} rows/s")
    size = sum(p.stat().st_size for p in args.dir.iterdir())
    out["bytes"] = size
    print(f"{size / 1e6:.0f} MB on disk in {len(store.days())} day files")
    searches = {
        "latest 100": Search(limit=100),
        "name contains 'site12' (100)": Search(name="site12", limit=100),
        "blocked, 100 newest": Search(result="blocked", limit=100),
        "one client, 100 newest": Search(client="192.0.2.7", limit=100),
        "client + blocked (100)": Search(client="192.0.2.7", result="blocked", limit=100),
        "last hour, category ads": Search(category="ads", since=now - 3600, limit=100),
        "rare name, whole week": Search(name="rare-needle", limit=100),
        "rare name, one day": Search(name="rare-needle", since=now - 4 * 86400,
                                     until=now - 3 * 86400, limit=100),  # fmt: skip
    }
    timings = {}
    for label, search in searches.items():
        ms, found = timed(store, search)
        timings[label] = {"ms": round(ms, 1), "found": found}
        print(f"{label:34} {ms:8.1f} ms  ({found} rows)")
    out["searches"] = timings
    print(json.dumps(out))


if __name__ == "__main__":
    main()

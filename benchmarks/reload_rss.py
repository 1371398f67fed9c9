"""Peak memory of a serving process across one list reload, measured from /proc/self/status.

Run as `python -m benchmarks.reload_rss CONFIG DATA_DIR [--mode child|inprocess]`; prints one
JSON object. The process plays the resolver: it maps the snapshot, runs a query mix (its
steady state), resets its high-water mark (`/proc/self/clear_refs` 5), reloads, swaps the
matcher, drops the old one, runs the query mix again, and reports VmHWM against the steady
VmRSS.

- `child`: the reload goes through `listsync.ListReloader` (download, compile and verify in
  a spawned child; this process only maps the new file).
- `inprocess`: the lists are compiled in this process (what a thread-based reload does),
  for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

from benchmarks.synthetic import query_mix, synthetic_names
from fdconfig import load_config
from filtercore import Matcher
from listsync.reloader import ListReloader


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("data_dir")
    parser.add_argument("--mode", choices=("child", "inprocess"), default="child")
    parser.add_argument("--queries", type=int, default=100_000)
    args = parser.parse_args()
    config = load_config(args.config, resolv_conf="/nonexistent")
    swapped: list[Matcher] = []
    reloader = ListReloader(
        config, lambda path: swapped.append(Matcher.from_snapshot(path)), data_dir=args.data_dir
    )
    path = reloader.ensure_snapshot()
    assert path is not None
    # The queries are built before measuring: they are the clients' traffic, not ours.
    listed = synthetic_names(20_000, seed=1)  # a subset of the listed names (same seed)
    queries = query_mix(listed, args.queries)
    matcher = Matcher.from_snapshot(path)
    matcher.check_many(queries)
    gc.collect()
    steady = status_kb("VmRSS")
    reset_ok = reset_peak()
    start = time.perf_counter()
    if args.mode == "child":
        report = reloader.run_now(force=True)
        assert report.compiled and swapped, report
        new = swapped.pop()
    else:
        new = Matcher.from_lists(config.list_specs())
    reload_seconds = time.perf_counter() - start
    swap_start = time.perf_counter()
    matcher = new  # the swap: the old matcher is dropped here
    del new
    gc.collect()  # the matcher holds reference cycles (verdict caches); free the old map now
    swap_seconds = time.perf_counter() - swap_start
    matcher.check_many(queries)
    peak = status_kb("VmHWM")
    after = status_kb("VmRSS")
    print(
        json.dumps(
            {
                "mode": args.mode,
                "steady_kb": steady,
                "peak_kb": peak,
                "after_kb": after,
                "ratio": round(peak / steady, 3),
                "peak_reset": reset_ok,
                "reload_seconds": round(reload_seconds, 2),
                "swap_seconds": round(swap_seconds, 4),
            }
        )
    )


if __name__ == "__main__":
    main()

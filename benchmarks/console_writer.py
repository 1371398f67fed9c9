"""What the console costs the query log's writer thread per row, without a server: the C
fast path's lines (as `FastPath._log` writes them) go through `QueryLog` with the
console's sinks (statistics, store), and the writer's CPU time per row is reported for
each part on its own and all together.

    python -m benchmarks.console_writer --rows 200000 --repeat 3

That work runs in the console's writer process (`querywriter.py`), not the serving
process: `python -m benchmarks.load ... --querylog --console --rates 100000,20000`
measures both on a server (docs/console.md). Prints one line per measure and a JSON
summary at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dns_resolver.observability.querylog import QueryLog
from dns_resolver.observability.querystats import QueryStats
from dns_resolver.observability.querystore import QueryStore

BUFFER_LINES = 10_000  # C's buffer holds about 0.1 s of lines at 100,000 q/s


def c_lines(rows: int, seed: int = 1) -> list[bytes]:
    """C-format lines of a cache-heavy mix: 80% cached, 10% blocked, 10% forwarded, over
    50,000 names and 500 clients, 100,000 queries a second from now."""
    rng = random.Random(seed)
    now = time.time()
    lines = []
    for i in range(rows):
        ts = now + i / 100_000
        second = int(ts)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        result = rng.choice(("cached",) * 8 + ("blocked", "allowed"))
        fields = (
            '"category":"adult","list":"test"' if result == "blocked"
            else '"category":null,"list":null'
        )  # fmt: skip
        lines.append(
            f'{{"timestamp":"{stamp}.{int((ts - second) * 1000):03d}Z",'
            f'"client":"10.0.{i % 500 // 250}.{i % 250}",'
            f'"qname":"site{rng.randrange(50_000)}.example","qtype":"A","protocol":"udp",'
            f'"result":"{result}",{fields},"rcode":null,"duration_ms":0.012}}\n'.encode()
        )
    return [b"".join(lines[i : i + BUFFER_LINES]) for i in range(0, rows, BUFFER_LINES)]


def per_row(buffers: list[bytes], rows: int, sinks: Callable[[QueryLog, Path], None]) -> float:
    """Writer CPU microseconds per row with the sinks `sinks` attaches."""
    with tempfile.TemporaryDirectory() as folder:
        qlog = QueryLog(Path(folder) / "q.log", anonymize="truncate", flush_interval=3600)
        sinks(qlog, Path(folder))
        qlog.describe_client = lambda client, category: ("default", "default", None)
        qlog.fast_path_settings()  # as the fast path asks: C's clients as it writes them
        started = time.thread_time()
        for buffer in buffers:
            qlog.log_formatted(buffer)
            qlog.flush()
        spent = time.thread_time() - started
        qlog.close()
    return spent / rows * 1e6


def _stats(qlog: QueryLog, _folder: Path) -> None:
    qlog.sinks.append(QueryStats().add)


def _store(qlog: QueryLog, folder: Path) -> None:
    qlog.sinks.append(QueryStore(folder / "store").add)


def _both(qlog: QueryLog, folder: Path) -> None:
    _stats(qlog, folder)
    _store(qlog, folder)


MEASURES: dict[str, Callable[[QueryLog, Path], None]] = {
    "log only": lambda qlog, folder: None,
    "rows, no sink": lambda qlog, folder: qlog.sinks.append(lambda rows: None),
    "statistics": _stats,
    "store": _store,
    "console (both)": _both,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    buffers = c_lines(args.rows)
    found: dict[str, list[float]] = {name: [] for name in MEASURES}
    for _ in range(args.repeat):  # alternating, so a load change hits every measure
        for name, sinks in MEASURES.items():
            found[name].append(per_row(buffers, args.rows, sinks))
    summary: dict[str, Any] = {}
    for name, values in found.items():
        median = statistics.median(values)
        summary[name] = {"median_us_per_row": round(median, 3), "runs": values}
        print(f"{name:16s} {median:7.2f} us/row  ({', '.join(f'{v:.2f}' for v in values)})")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

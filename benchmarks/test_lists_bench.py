"""List pipeline benchmarks: snapshot compile time and size, load time, reload peak memory.

Sizes: FILTERDNS_BENCH_ENTRIES synthetic entries (default 1,000,000; CI's smoke run uses
100,000), plus FILTERDNS_BENCH_BIG (e.g. 5,000,000) only when that variable is set, and the
real UT1 categories in ../shared/data/ut1. Run with
`python -m pytest benchmarks/test_lists_bench.py --benchmark-enable -s` to see the figures.

Targets (issue 4): 5M entries compile in under 15 s, a snapshot loads in under 100 ms, at
most 16 bytes of table per entry, and peak RSS during a reload below 1.3x steady state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.synthetic import synthetic_names, write_list
from filtercore import ListSpec, Matcher
from filtercore.compiler import compile_lists
from filtercore.snapshot import write_snapshot

ENTRIES = int(os.environ.get("FILTERDNS_BENCH_ENTRIES", "1000000"))
BIG = int(os.environ["FILTERDNS_BENCH_BIG"]) if os.environ.get("FILTERDNS_BENCH_BIG") else None
SIZES = [ENTRIES] + ([BIG] if BIG else [])
UT1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ut1"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}")
def synthetic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    count = request.param
    return write_list(tmp_path_factory.mktemp("lists") / f"s{count}.txt", synthetic_names(count))


def _compile_and_write(specs: list[ListSpec], out: Path) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    compiled = compile_lists(specs)
    write_snapshot(compiled, out)
    elapsed = time.perf_counter() - start
    return elapsed, Matcher(compiled).stats()


def _print_build(label: str, entries: int, seconds: float, stats: dict, out: Path) -> None:  # type: ignore[type-arg]
    table = int(stats["table_bytes"])  # type: ignore[call-overload]
    print(
        f"\n{label}: {entries:,} entries compiled and written in {seconds:.2f} s; "
        f"snapshot {out.stat().st_size:,} bytes ({out.stat().st_size / entries:.1f} B/entry), "
        f"table {table / entries:.1f} B/entry"
    )


@pytest.mark.benchmark(group="lists-build")
def test_compile_snapshot_synthetic(benchmark, synthetic: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "lists.snap"
    seconds, stats = benchmark.pedantic(
        _compile_and_write,
        args=([ListSpec(str(synthetic), category="adult")], out),
        rounds=1,
        iterations=1,
    )
    entries = int(stats["entries"])  # type: ignore[call-overload]
    _print_build("synthetic", entries, seconds, stats, out)
    assert int(stats["table_bytes"]) <= 16 * entries  # type: ignore[call-overload]


@pytest.mark.benchmark(group="lists-build")
def test_compile_snapshot_ut1(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ut1.snap"
    seconds, stats = benchmark.pedantic(
        _compile_and_write, args=([ListSpec(str(UT1), name="ut1")], out), rounds=1, iterations=1
    )
    entries = int(stats["entries"])  # type: ignore[call-overload]
    _print_build("UT1 categories", entries, seconds, stats, out)
    assert entries > 10_000


@pytest.mark.benchmark(group="lists-load")
def test_snapshot_load(benchmark, synthetic: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "lists.snap"
    _compile_and_write([ListSpec(str(synthetic), category="adult")], out)
    matcher = benchmark(Matcher.from_snapshot, str(out))
    assert matcher.check("www." + synthetic.read_text().split("\n", 1)[0]).blocked
    if benchmark.stats is not None:
        s = benchmark.stats.stats
        print(
            f"\nsnapshot load ({out.stat().st_size:,} bytes): min {s.min * 1e3:.2f} ms, "
            f"median {s.median * 1e3:.2f} ms"
        )


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", ["child", "inprocess"])
def test_reload_peak_rss(synthetic: Path, tmp_path: Path, mode: str) -> None:
    """A serving process's peak RSS across a reload, vs its steady state (target < 1.3x
    with the child-process reloader; the in-process compile is shown for comparison)."""
    config = tmp_path / "filterdns.toml"
    config.write_text(
        f'[server]\ndata_dir = "state"\n[[lists]]\npath = "{synthetic}"\ncategory = "adult"\n'
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.reload_rss",
            str(config),
            str(tmp_path / "state"),
            "--mode",
            mode,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    print(
        f"\nreload peak RSS ({mode}, {synthetic.name}): steady {figures['steady_kb'] / 1024:.0f}"
        f" MiB, peak {figures['peak_kb'] / 1024:.0f} MiB ({figures['ratio']:.2f}x), reload "
        f"{figures['reload_seconds']} s, swap {figures['swap_seconds'] * 1e3:.1f} ms"
    )
    if mode == "child" and figures["peak_reset"]:
        assert figures["ratio"] < 1.3

"""filtercore benchmarks: the Cython matcher beside a plain Python `set` suffix walk.

Run with `python -m pytest benchmarks --benchmark-enable` (FILTERDNS_BENCH_ENTRIES sets the
list size, default 1,000,000; the test suite's smoke run uses a small one). Per-name figures
are the benchmark's mean divided by the batch size (QUERIES), printed in the summary lines.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from benchmarks.synthetic import query_mix, set_baseline_check, synthetic_names, write_list
from filtercore import ListSpec, Matcher

ENTRIES = int(os.environ.get("FILTERDNS_BENCH_ENTRIES", "1000000"))
QUERIES = 10_000
UT1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ut1"


@pytest.fixture(scope="module")
def names() -> list[str]:
    return synthetic_names(ENTRIES)


@pytest.fixture(scope="module")
def list_file(names: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_list(tmp_path_factory.mktemp("bench") / "synthetic.txt", names)


@pytest.fixture(scope="module")
def matcher(list_file: Path) -> Matcher:
    return Matcher.from_lists([ListSpec(str(list_file), category="adult")])


@pytest.fixture(scope="module")
def baseline(names: list[str]) -> set[str]:
    return set(names)


@pytest.fixture(scope="module")
def queries(names: list[str]) -> list[str]:
    return query_mix(names, QUERIES)


def _report(label: str, benchmark, per: int) -> None:  # type: ignore[no-untyped-def]
    # The minimum and median resist the noise of a shared 2-core machine; the mean does not.
    if benchmark.stats is not None:
        s = benchmark.stats.stats
        print(
            f"\n{label}: min {s.min / per * 1e9:.0f} ns, median {s.median / per * 1e9:.0f} ns, "
            f"mean {s.mean / per * 1e9:.0f} ns per item ({ENTRIES:,} entries)"
        )


@pytest.mark.benchmark(group="lookup")
def test_check_single(benchmark, matcher: Matcher, queries: list[str]) -> None:  # type: ignore[no-untyped-def]
    check = matcher.check

    def run() -> int:
        return sum(check(q).blocked for q in queries)

    blocked = benchmark(run)
    assert blocked > 0
    _report("check", benchmark, QUERIES)


@pytest.mark.benchmark(group="lookup")
def test_check_many(benchmark, matcher: Matcher, queries: list[str]) -> None:  # type: ignore[no-untyped-def]
    verdicts = benchmark(matcher.check_many, queries)
    assert [v.blocked for v in verdicts] == [matcher.check(q).blocked for q in queries]
    _report("check_many", benchmark, QUERIES)


@pytest.mark.benchmark(group="lookup")
def test_set_baseline(benchmark, baseline: set[str], matcher: Matcher, queries: list[str]) -> None:  # type: ignore[no-untyped-def]
    def run() -> int:
        return sum(set_baseline_check(baseline, q) for q in queries)

    blocked = benchmark(run)
    assert blocked == sum(v.blocked for v in matcher.check_many(queries))
    _report("set baseline", benchmark, QUERIES)


@pytest.mark.benchmark(group="lookup")
def test_check_url(benchmark, matcher: Matcher, queries: list[str]) -> None:  # type: ignore[no-untyped-def]
    urls = [f"http://{q}/path/to/page.html?id=1" for q in queries]

    def run() -> int:
        return sum(matcher.check_url(u).blocked for u in urls)

    assert benchmark(run) > 0
    _report("check_url", benchmark, QUERIES)


@pytest.mark.benchmark(group="build")
def test_compile(benchmark, list_file: Path) -> None:  # type: ignore[no-untyped-def]
    m = benchmark.pedantic(
        lambda: Matcher.from_lists([ListSpec(str(list_file), category="adult")]),
        rounds=1,
        iterations=1,
    )
    assert m.stats()["entries"] == ENTRIES
    _report("compile", benchmark, ENTRIES)


@pytest.mark.benchmark(group="build")
def test_compile_ut1(benchmark) -> None:  # type: ignore[no-untyped-def]
    m = benchmark.pedantic(
        lambda: Matcher.from_lists([ListSpec(str(UT1), name="ut1")]), rounds=1, iterations=1
    )
    assert m.stats()["entries"] > 10_000


def test_memory_per_entry(names: list[str], list_file: Path) -> None:
    """Bytes per entry: the table (and side table) vs a Python set of the same names."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    baseline = set(names)
    set_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # The strings exist anyway in `names`; a set-based filter would hold them too.
    set_bytes += sum(len(n) + 49 for n in names)
    start = time.perf_counter()
    m = Matcher.from_lists([ListSpec(str(list_file), category="adult")])
    elapsed = time.perf_counter() - start
    stats = m.stats()
    table = stats["table_bytes"] / ENTRIES
    side = stats["side_bytes"] / ENTRIES
    per_set = set_bytes / len(baseline)
    print(
        f"\nmemory per entry: table {table:.1f} B + side {side:.1f} B; "
        f"set baseline {per_set:.1f} B (ratio {(table + side) / per_set:.2f}); "
        f"compile {elapsed:.2f} s for {ENTRIES:,}"
    )
    assert table <= 16

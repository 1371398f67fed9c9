"""filtercore benchmarks: the Cython matcher beside a plain Python `set` suffix walk.

Two data sets: a synthetic list (FILTERDNS_BENCH_ENTRIES names, default 1,000,000) and the
real UT1 categories in ../shared/data/ut1. For each: single `check`, `check_many`,
`check_url`, compile, snapshot load and memory per entry, each beside the `set` baseline in
the same run. Run with

    python -m pytest benchmarks/test_matcher_bench.py --benchmark-enable -s

Per-name figures are printed as min / median / mean over the batch (QUERIES names); the
minimum and median resist the noise of a shared 2-core machine, the mean does not.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.synthetic import query_mix, set_baseline_check, synthetic_names, write_list
from filtercore import ListSpec, Matcher, RuleKind
from filtercore.normalize import normalize_ip

ENTRIES = int(os.environ.get("FILTERDNS_BENCH_ENTRIES", "1000000"))
QUERIES = 10_000
UT1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ut1"


@dataclass
class DataSet:
    name: str
    names: list[str]  # every listed name, normalised
    specs: list[ListSpec]
    files: list[Path]  # the plain domain files, for the set baseline's build
    queries: list[str]
    matcher: Matcher
    baseline: set[str]


def _ut1_files() -> list[Path]:
    return sorted(p for p in UT1.glob("*/domains"))


def _build(name: str, tmp: Path) -> DataSet:
    if name == "synthetic":
        names = synthetic_names(ENTRIES)
        files = [write_list(tmp / "synthetic.txt", names)]
        specs = [ListSpec(str(files[0]), category="adult")]
    else:
        files = _ut1_files()
        lines = {s.strip().lstrip(".") for f in files for s in f.open() if s.strip()}
        # IP entries match only exactly; the naive baseline would walk their "suffixes".
        names = sorted(n for n in lines if normalize_ip(n) is None)
        specs = [ListSpec(str(UT1), name="ut1")]
    matcher = Matcher.from_lists(specs)
    return DataSet(name, names, specs, files, query_mix(names, QUERIES), matcher, set(names))


@pytest.fixture(scope="module", params=["synthetic", "ut1"])
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DataSet:
    return _build(request.param, tmp_path_factory.mktemp(request.param))


def _report(label: str, data: DataSet, benchmark, per: int) -> None:  # type: ignore[no-untyped-def]
    if benchmark.stats is not None:
        s = benchmark.stats.stats
        print(
            f"\n[{data.name}, {len(data.names):,} names] {label}: min {s.min / per * 1e9:.0f} ns, "
            f"median {s.median / per * 1e9:.0f} ns, mean {s.mean / per * 1e9:.0f} ns per item"
        )


@pytest.mark.benchmark(group="check")
def test_check_single(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    check = data.matcher.check
    benchmark(lambda: [check(q) for q in data.queries])
    # Same answers as the baseline: a name is under a listed domain or it is not (UT1's
    # white categories allow, so compare "a domain entry decided", not "blocked").
    decided = [check(q).kind in (RuleKind.DOMAIN, RuleKind.IP) for q in data.queries]
    assert decided == [set_baseline_check(data.baseline, q) for q in data.queries]
    _report("check", data, benchmark, QUERIES)


@pytest.mark.benchmark(group="check")
def test_check_many(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    verdicts = benchmark(data.matcher.check_many, data.queries)
    assert [v.blocked for v in verdicts] == [data.matcher.check(q).blocked for q in data.queries]
    _report("check_many", data, benchmark, QUERIES)


@pytest.mark.benchmark(group="check")
def test_check_set_baseline(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    table = data.baseline
    benchmark(lambda: [set_baseline_check(table, q) for q in data.queries])
    _report("set baseline", data, benchmark, QUERIES)


def _urls(data: DataSet) -> list[str]:
    return [f"http://{q}/path/to/page.html?id=1" for q in data.queries]


@pytest.mark.benchmark(group="check_url")
def test_check_url(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    urls = _urls(data)
    check_url = data.matcher.check_url
    benchmark(lambda: [check_url(u) for u in urls])
    _report("check_url", data, benchmark, QUERIES)


@pytest.mark.benchmark(group="check_url")
def test_check_url_set_baseline(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    urls = _urls(data)
    table = data.baseline

    def run() -> list[bool]:
        return [set_baseline_check(table, u.split("/", 3)[2].split(":")[0]) for u in urls]

    benchmark(run)
    _report("check_url set baseline", data, benchmark, QUERIES)


@pytest.mark.benchmark(group="build")
def test_compile(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    m = benchmark.pedantic(lambda: Matcher.from_lists(data.specs), rounds=1, iterations=1)
    assert m.stats()["entries"] >= len(data.names)
    _report("compile", data, benchmark, len(data.names))


@pytest.mark.benchmark(group="build")
def test_compile_set_baseline(benchmark, data: DataSet) -> None:  # type: ignore[no-untyped-def]
    def build() -> set[str]:
        table: set[str] = set()
        for path in data.files:
            with path.open() as f:
                table.update(line.strip().lower().rstrip(".") for line in f if line.strip())
        return table

    assert len(benchmark.pedantic(build, rounds=1, iterations=1)) >= len(data.names) * 0.99
    _report("set build", data, benchmark, len(data.names))


@pytest.mark.benchmark(group="build")
def test_snapshot_load(benchmark, data: DataSet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "lists.snap"
    data.matcher.save_snapshot(str(path))
    loaded = benchmark(Matcher.from_snapshot, str(path))
    assert loaded.check_many(data.queries[:100]) == data.matcher.check_many(data.queries[:100])
    if benchmark.stats is not None:
        print(f"\n[{data.name}] snapshot load: min {benchmark.stats.stats.min * 1e3:.1f} ms")


def test_memory_per_entry(data: DataSet) -> None:
    """Bytes per entry: the table (and its side table) vs a Python set of the same names."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copy = {n.encode().decode() for n in data.names}  # new strings: the set owns them
    set_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = data.matcher.stats()
    entries = stats["entries"]
    table = stats["table_bytes"] / entries
    side = stats["side_bytes"] / entries
    per_set = set_bytes / len(copy)
    print(
        f"\n[{data.name}] memory per entry: table {table:.1f} B + side {side:.1f} B; "
        f"set baseline {per_set:.1f} B; (table + side) / set = {(table + side) / per_set:.2f}"
    )
    assert table <= 16

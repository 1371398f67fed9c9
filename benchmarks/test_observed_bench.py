"""Newly observed domains in C (`dns_resolver/fast/_observed.pyx`): the cost of one cache miss
handed to the filters, by what it turns out to be. Each call includes Python's call of
`Observed.observe` (about 0.04 µs), which the fast path does not pay.

    python -m pytest benchmarks/test_observed_bench.py --benchmark-enable -s
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dns_resolver.observability.observed import BloomPair

NETWORK = bytes([4, 192, 0, 2]) + bytes(13)
BATCH = 10_000


def _filters() -> BloomPair:
    filters = BloomPair(4 << 20, 0.001, 86_400.0, 0.0)  # the defaults
    filters.records(1 << 20, 80, 3600.0, 20_000)
    return filters


def _run(filters: BloomPair, names: list[bytes]) -> Callable[[], None]:
    observe = filters.observe

    def batch() -> None:
        for name in names:
            observe(name, NETWORK, 1.0)
        filters.take()  # a drain's worth, as the tracker takes them

    return batch


@pytest.mark.benchmark(group="observed")
@pytest.mark.parametrize("kind", ["known", "new"])
def test_a_miss(benchmark: pytest.FixtureRequest, kind: str) -> None:
    filters = _filters()
    known = [f"www.site{i}.example.com".encode() for i in range(5_000)]
    for name in known:
        filters.observe(name, NETWORK, 1.0)
    filters.take()
    if kind == "known":  # a domain asked recently: the usual miss
        names = known * (BATCH // len(known))
        benchmark(_run(filters, names))
    else:  # a domain never seen: the Bloom filters' probes and a record for Python
        rounds = 20
        batches = iter([
            _run(filters, [f"www.n{r}-{i}.org".encode() for i in range(BATCH)])
            for r in range(rounds)
        ])  # names made before the clock runs
        benchmark.pedantic(lambda: next(batches)(), rounds=rounds)
    assert filters.noted >= BATCH

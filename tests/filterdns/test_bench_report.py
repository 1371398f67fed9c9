"""The load benchmark's report (`filterdns bench --repeat N`): which run stands for each
server and mix."""

from __future__ import annotations

from benchmarks.load.runner import Run, medians


def test_medians_take_the_median_of_what_each_mix_measures() -> None:
    runs = [Run("s", "mix", 1.0, qps=q, cpu_us_per_query=q / 10) for q in (300.0, 100.0, 200.0)]
    # Fixed-rate runs all have the same rate: their median is by the 99th percentile.
    runs += [Run("s", "p99@10k", 1.0, qps=10_000.0, p99_latency_ms=p) for p in (0.9, 0.1, 0.2)]
    chosen = {r.mix: r for r in medians(runs)}
    assert chosen["mix"].qps == 200.0
    assert chosen["mix"].extra["qps_all"] == [300, 100, 200]
    assert chosen["p99@10k"].p99_latency_ms == 0.2
    assert chosen["p99@10k"].extra["p99_ms_all"] == [0.9, 0.1, 0.2]

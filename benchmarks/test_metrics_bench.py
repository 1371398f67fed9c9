"""The per-query metrics call, beside prometheus-client's own labelled counter."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from dns_resolver.observability.metrics import Metrics


@pytest.mark.benchmark(group="metrics")
def test_metrics_query(benchmark) -> None:  # type: ignore[no-untyped-def]
    metrics = Metrics()
    benchmark(metrics.query, 1, "udp", "allowed", 0.00012)


@pytest.mark.benchmark(group="metrics")
def test_prometheus_labelled_counter_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    counter = Counter(
        "baseline_queries", "q", ["qtype", "protocol", "result"], registry=CollectorRegistry()
    )
    benchmark(lambda: counter.labels("A", "udp", "allowed").inc())

"""Metrics as Prometheus scrapes them: over HTTP from the real /metrics listener."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dns_resolver.observability.metrics import (
    LATENCY_BUCKETS,
    Metrics,
    MetricsServer,
    start_metrics_server,
)
from tests.dns_resolver.harness import sample_value, scrape


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics()
    server = start_metrics_server("127.0.0.1", 0, metrics.registry)
    yield metrics, server
    server.stop()


def value(server: MetricsServer, name: str, **labels: str) -> float:
    return sample_value(scrape("127.0.0.1", server.port), name, **labels)


def test_queries_by_qtype_protocol_and_result(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    metrics.query(1, "udp", "allowed", 0.0002)
    metrics.query(1, "udp", "allowed", 0.0003)
    metrics.query(28, "tcp", "cached", 0.00002)
    metrics.query(65, "udp", "blocked", 0.001)
    metrics.query(99, "udp", "refused", 0.00001)  # an unlisted qtype code: "other"
    metrics.query(4242, "udp", "refused", 0.00001)
    metrics.query(0, "udp", "formerr", 0.00001)
    q = "filterdns_queries_total"
    assert value(server, q, qtype="A", protocol="udp", result="allowed") == 2
    assert value(server, q, qtype="AAAA", protocol="tcp", result="cached") == 1
    assert value(server, q, qtype="HTTPS", result="blocked") == 1
    assert value(server, q, qtype="other", result="refused") == 2
    assert value(server, q, result="formerr") == 1
    assert value(server, q) == 7
    assert value(server, "filterdns_response_seconds_count") == 7
    assert value(server, "filterdns_response_seconds_sum") == pytest.approx(0.00155)
    # Buckets are cumulative: 0.00002 falls in le=2.5e-05; everything in +Inf.
    assert value(server, "filterdns_response_seconds_bucket", le="1e-05") == 3
    assert value(server, "filterdns_response_seconds_bucket", le="2.5e-05") == 4
    assert value(server, "filterdns_response_seconds_bucket", le="0.00025") == 5
    assert value(server, "filterdns_response_seconds_bucket", le="+Inf") == 7


def test_label_values_stay_bounded(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    for code in range(300):
        metrics.query(code, "udp", "allowed", 0.001)
    families = {f.name: f for f in text_string_to_metric_families(scrape("127.0.0.1", server.port))}
    qtypes = {s.labels["qtype"] for s in families["filterdns_queries"].samples}
    assert qtypes <= {
        "A", "AAAA", "CNAME", "MX", "TXT", "HTTPS", "SVCB", "PTR", "SRV", "NS", "SOA", "ANY",
        "other",
    }  # fmt: skip
    assert "other" in qtypes


def test_blocks_cache_and_lists(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    metrics.block("adult", "ut1")
    metrics.block("adult", "ut1")
    metrics.block("gambling", "custom")
    metrics.cache_hit()
    metrics.cache_miss()
    metrics.cache_miss()
    metrics.cache_evicted(3)
    metrics.cache_entries(17)
    metrics.lists_loaded({"ut1": 1000, "custom": 3}, when=1_700_000_000.0)
    metrics.list_reload(True)
    metrics.list_reload(False)
    metrics.list_reload(False)
    assert value(server, "filterdns_config_reloads_total", result="applied") == 0
    metrics.config_reload("applied")
    metrics.config_reload("rejected")
    metrics.config_reload("rejected")
    assert value(server, "filterdns_blocks_total", category="adult", list="ut1") == 2
    assert value(server, "filterdns_blocks_total", category="gambling") == 1
    assert value(server, "filterdns_cache_hits_total") == 1
    assert value(server, "filterdns_cache_misses_total") == 2
    assert value(server, "filterdns_cache_evictions_total") == 3
    assert value(server, "filterdns_cache_entries") == 17
    assert value(server, "filterdns_list_entries", list="ut1") == 1000
    assert value(server, "filterdns_lists_loaded_timestamp_seconds") == 1_700_000_000.0
    assert value(server, "filterdns_list_reloads_total", result="success") == 1
    assert value(server, "filterdns_list_reloads_total", result="failure") == 2
    assert value(server, "filterdns_config_reloads_total", result="applied") == 1
    assert value(server, "filterdns_config_reloads_total", result="rejected") == 2
    # A reload without a list drops its series.
    metrics.lists_loaded({"ut1": 900})
    assert value(server, "filterdns_list_entries", list="custom") == 0
    assert time.time() - value(server, "filterdns_lists_loaded_timestamp_seconds") < 60


def test_cache_entries_read_at_scrape_time(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    cache: dict[str, int] = {}
    metrics.watch_cache_entries(cache.__len__)
    cache.update(a=1, b=2)
    assert value(server, "filterdns_cache_entries") == 2


def test_upstream_metrics(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    up = "192.0.2.1:53"
    metrics.upstream_query(up, 0.004)
    metrics.upstream_query(up)  # failed: counted, no latency
    metrics.upstream_error(up, "timeout")
    metrics.upstream_error(up, "spoofed")
    metrics.upstream_healthy(up, False)
    assert value(server, "filterdns_upstream_queries_total", upstream=up) == 2
    assert value(server, "filterdns_upstream_errors_total", upstream=up, kind="timeout") == 1
    assert value(server, "filterdns_upstream_errors_total", kind="spoofed") == 1
    assert value(server, "filterdns_upstream_seconds_count", upstream=up) == 1
    assert value(server, "filterdns_upstream_healthy", upstream=up) == 0
    metrics.upstream_healthy(up, True)
    assert value(server, "filterdns_upstream_healthy", upstream=up) == 1
    # A config reload's upstreams replace the series (healthy until they fail).
    metrics.upstreams_in_use(["192.0.2.2:53"])
    assert value(server, "filterdns_upstream_healthy", upstream="192.0.2.2:53") == 1
    healthy = [
        line for line in scrape("127.0.0.1", server.port).splitlines()
        if line.startswith("filterdns_upstream_healthy{")
    ]
    assert healthy == ['filterdns_upstream_healthy{upstream="192.0.2.2:53"} 1.0']
    with pytest.raises(ValueError):
        metrics.upstream_error(up, "bored")


def test_every_name_is_prefixed_and_registries_are_separate() -> None:
    first, second = Metrics(), Metrics()
    first.query(1, "udp", "allowed", 0.001)
    server = start_metrics_server("127.0.0.1", 0, second.registry)
    try:
        text = scrape("127.0.0.1", server.port)
    finally:
        server.stop()
    assert sample_value(text, "filterdns_queries_total") == 0
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names and all(n.startswith("filterdns_") for n in names)
    expected = {
        "filterdns_queries", "filterdns_blocks", "filterdns_response_seconds",
        "filterdns_cache_entries", "filterdns_cache_hits", "filterdns_cache_misses",
        "filterdns_cache_evictions", "filterdns_upstream_queries", "filterdns_upstream_errors",
        "filterdns_upstream_seconds", "filterdns_upstream_healthy", "filterdns_list_entries",
        "filterdns_lists_loaded_timestamp_seconds", "filterdns_list_reloads",
        "filterdns_config_reloads",
    }  # fmt: skip
    assert expected <= names


def _healthz(server: MetricsServer) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_healthz_says_whether_lists_are_loaded_and_an_upstream_answers(
    served: tuple[Metrics, MetricsServer],
) -> None:
    metrics, server = served
    status, body = _healthz(server)
    assert (status, body["status"], body["lists_loaded"]) == (503, "unavailable", False)
    metrics.lists_loaded({"test": 3})
    status, body = _healthz(server)
    assert (status, body["upstream_reachable"]) == (200, True)
    metrics.upstream_healthy("127.0.0.1:53", False)
    status, body = _healthz(server)
    assert status == 503 and body["upstreams"] == {"127.0.0.1:53": False}
    metrics.upstream_healthy("127.0.0.2:53", True)
    assert _healthz(server)[0] == 200


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _series(registry: CollectorRegistry, family: str) -> Series:
    """Every sample of `family` as generate_latest writes it, by (name, labels)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        if f.name == family
        for s in f.samples
    }


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_merge_upstream_adds_to_what_events_recorded() -> None:
    metrics = Metrics()
    up, other = "192.0.2.1:53", "192.0.2.2:53"
    metrics.upstream_query(up, 0.004)  # bucket le=0.005
    metrics.upstream_query(up)
    metrics.upstream_error(up, "timeout")
    latency = [0] * (len(LATENCY_BUCKETS) + 1)
    latency[LATENCY_BUCKETS.index(0.001)] = 2
    latency[LATENCY_BUCKETS.index(0.005)] = 1
    latency[-1] = 1  # slower than the last bound: +Inf only
    metrics.merge_upstream(
        up,
        queries=6,
        latency=latency,
        latency_sum=0.0008 + 0.0009 + 0.003 + 7.0,
        errors={"timeout": 1, "servfail": 1, "refused": 0},
    )

    seconds = _series(metrics.registry, "filterdns_upstream_seconds")
    bucket = "filterdns_upstream_seconds_bucket"
    assert seconds[_key(bucket, upstream=up, le="0.0005")] == 0
    assert seconds[_key(bucket, upstream=up, le="0.001")] == 2
    assert seconds[_key(bucket, upstream=up, le="0.0025")] == 2
    assert seconds[_key(bucket, upstream=up, le="0.005")] == 4  # 2 + 1 merged, 1 observed
    assert seconds[_key(bucket, upstream=up, le="5.0")] == 4
    assert seconds[_key(bucket, upstream=up, le="+Inf")] == 5
    assert seconds[_key("filterdns_upstream_seconds_count", upstream=up)] == 5
    assert seconds[_key("filterdns_upstream_seconds_sum", upstream=up)] == pytest.approx(
        0.004 + 7.0047
    )
    queries = _series(metrics.registry, "filterdns_upstream_queries")
    assert queries[_key("filterdns_upstream_queries_total", upstream=up)] == 2 + 6
    errors = _series(metrics.registry, "filterdns_upstream_errors")
    error = "filterdns_upstream_errors_total"
    assert errors[_key(error, upstream=up, kind="timeout")] == 2
    assert errors[_key(error, upstream=up, kind="servfail")] == 1
    # A zero count creates no series, as no event would have.
    assert _key(error, upstream=up, kind="refused") not in errors

    # A new upstream gets series of its own; with failures only, no histogram.
    no_latency = [0] * (len(LATENCY_BUCKETS) + 1)
    metrics.merge_upstream(
        other, queries=3, latency=no_latency, latency_sum=0.0, errors={"network": 3}
    )
    queries = _series(metrics.registry, "filterdns_upstream_queries")
    assert queries[_key("filterdns_upstream_queries_total", upstream=other)] == 3
    seconds = _series(metrics.registry, "filterdns_upstream_seconds")
    assert {dict(labels)["upstream"] for _, labels in seconds} == {up}
    assert seconds[_key("filterdns_upstream_seconds_count", upstream=up)] == 5


def test_merge_upstream_rejects_bad_counts_without_counting() -> None:
    metrics = Metrics()
    up = "192.0.2.1:53"
    latency = [1] + [0] * len(LATENCY_BUCKETS)
    with pytest.raises(ValueError, match="'bored'"):
        metrics.merge_upstream(
            up, queries=1, latency=latency, latency_sum=0.0, errors={"timeout": 1, "bored": 1}
        )
    with pytest.raises(ValueError, match="buckets"):
        metrics.merge_upstream(up, queries=1, latency=[1], latency_sum=0.0, errors={})
    with pytest.raises(ValueError, match="negative"):
        metrics.merge_upstream(up, queries=-1, latency=latency, latency_sum=0.0, errors={})
    for family in ("queries", "errors", "seconds"):
        assert not _series(metrics.registry, f"filterdns_upstream_{family}")


def test_upstream_histogram_exposition_matches_prometheus_client() -> None:
    """Scrapers see the series the prometheus-client Histogram it replaces wrote."""
    metrics = Metrics()
    help_text = "Round-trip time of successful upstream exchanges."
    reference = CollectorRegistry()
    histogram = Histogram(
        "filterdns_upstream_seconds",
        help_text,
        ["upstream"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    for upstream, seconds in [("b:53", 0.00001), ("a:53", 0.3), ("b:53", 1.0), ("b:53", 9.0)]:
        metrics.upstream_query(upstream, seconds)
        histogram.labels(upstream).observe(seconds)
    theirs = _series(reference, "filterdns_upstream_seconds")
    assert len(theirs) == 2 * (len(LATENCY_BUCKETS) + 3)  # buckets with +Inf, _count, _sum
    assert _series(metrics.registry, "filterdns_upstream_seconds") == theirs
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    (family,) = (f for f in families if f.name == "filterdns_upstream_seconds")
    assert (family.type, family.documentation) == ("histogram", help_text)

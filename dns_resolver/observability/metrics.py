"""Prometheus metrics for the resolver, on a dedicated registry and HTTP listener.

The serving code calls one `Metrics` method per event. The per-query metrics (queries by
qtype/protocol/result, the response-time histogram, blocks, cache hits and misses) are kept
in plain Python counters behind one lock and turned into Prometheus families only when
scraped: prometheus-client's own `Counter.inc()` and `Histogram.observe()` take a lock per
call and walk the bucket list in Python, several times the cost of what is done here. The
rarer events (upstream queries, list reloads) use ordinary prometheus-client metrics, except
the upstream round-trip histogram: it is kept as bucket counts too, because counts flushed in
bulk (`merge_upstream`) cannot be fed into a prometheus-client Histogram.

Label values are bounded by construction: qtypes outside a fixed set become "other",
results, protocols and upstream error kinds come from fixed tuples, and category and list
labels come from the configuration, never from a query. Query names and client addresses
never become labels.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dns_resolver.reconfigure import RESULTS as RESULTS_OF_RECONFIGURE

__all__ = [
    "LATENCY_BUCKETS",
    "PROTOCOLS",
    "QTYPE_LABELS",
    "RELOAD_RESULTS",
    "RESULTS",
    "UPSTREAM_ERROR_KINDS",
    "Metrics",
    "MetricsServer",
    "start_metrics_server",
]

QTYPE_LABELS: dict[int, str] = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}
"""The qtypes with their own label value; every other code is counted as "other"."""

RESULTS = (
    "allowed", "blocked", "cached", "local", "refused", "servfail", "formerr", "notimp"
)
PROTOCOLS = ("udp", "tcp")
UPSTREAM_ERROR_KINDS = (
    "timeout", "refused", "servfail", "spoofed", "garbage", "network",
    # encrypted upstreams: a certificate rejected, another TLS failure, an HTTP error status
    "certificate", "tls", "http",
)
UPSTREAM_TRANSPORTS = ("tls", "https")
RELOAD_RESULTS = ("success", "failure")

LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Response-time buckets (seconds): a cache hit takes tens of µs, a dead upstream seconds."""


def _qtype_label(code: int) -> str:
    return QTYPE_LABELS.get(code, "other")


def _read(counter: itertools.count) -> int:
    """The current value of an `itertools.count` used as a counter (its next value)."""
    # count has no accessor; its repr is "count(N)" (stable since Python 2.7).
    return int(repr(counter)[6:-1])


def _cumulative_buckets(counts: Iterable[int]) -> list[tuple[str, float]]:
    """(le, cumulative count) pairs from one count per bucket of LATENCY_BUCKETS plus +Inf."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*LATENCY_BUCKETS, None), counts, strict=True):
        cumulative += count
        # repr gives the le values prometheus-client's own Histogram writes ("1e-05", "1.0").
        buckets.append(("+Inf" if bound is None else repr(bound), cumulative))
    return buckets


class _LatencyCounts:
    """One upstream's round-trip histogram: a count per bucket (+Inf last) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class _HotPathCollector(Collector):
    """Exposes the counters `Metrics` keeps for per-query events."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for hook in list(m._scrape_hooks):
            hook()
        entries = m._cache_entries_fn() if m._cache_entries_fn is not None else m._cache_entries

        family = CounterMetricFamily(
            "filterdns_queries",
            "Client queries by query type, protocol and result.",
            labels=["qtype", "protocol", "result"],
        )
        merged: dict[tuple[str, str, str], int] = {}
        for (code, protocol, result), counter in list(m._queries.items()):
            key = (_qtype_label(code), protocol, result)
            merged[key] = merged.get(key, 0) + _read(counter)
        with m._lock:
            bulk_queries = dict(m._bulk_queries)
            bulk_blocks = dict(m._bulk_blocks)
            bulk_latency = list(m._bulk_latency)
        for (code, protocol, result), value in bulk_queries.items():
            key = (_qtype_label(code), protocol, result)
            merged[key] = merged.get(key, 0) + value
        for labels, value in sorted(merged.items()):
            family.add_metric(list(labels), value)
        yield family

        family = CounterMetricFamily(
            "filterdns_blocks",
            "Blocked queries by canonical category and list.",
            labels=["category", "list"],
        )
        blocks = {labels: _read(counter) for labels, counter in list(m._blocks.items())}
        for labels, value in bulk_blocks.items():
            blocks[labels] = blocks.get(labels, 0) + value
        for labels, value in sorted(blocks.items()):
            family.add_metric(list(labels), value)
        yield family

        counts = [
            _read(counter) + extra for counter, extra in zip(m._latency, bulk_latency, strict=True)
        ]
        family = HistogramMetricFamily(
            "filterdns_response_seconds", "Time from receiving a query to sending its answer."
        )
        family.add_metric([], _cumulative_buckets(counts), m._latency_sum)
        yield family

        yield GaugeMetricFamily(
            "filterdns_cache_entries", "Entries in the response cache.", value=entries
        )
        yield CounterMetricFamily(
            "filterdns_cache_hits",
            "Answers served from the cache.",
            value=_read(m._cache_hits) + m._bulk_cache_hits,
        )
        yield CounterMetricFamily(
            "filterdns_cache_misses",
            "Cache lookups that found nothing usable.",
            value=_read(m._cache_misses) + m._bulk_cache_misses,
        )
        yield CounterMetricFamily(
            "filterdns_cache_evictions",
            "Cache entries evicted to stay within cache.max_entries.",
            value=m._cache_evictions,
        )


class _UpstreamLatencyCollector(Collector):
    """Exposes the upstream round-trip histogram `Metrics` keeps as bucket counts."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        with m._lock:
            snapshot = [
                (upstream, list(h.counts), h.total) for upstream, h in m._upstream_latency.items()
            ]
        family = HistogramMetricFamily(
            "filterdns_upstream_seconds",
            "Round-trip time of successful upstream exchanges.",
            labels=["upstream"],
        )
        for upstream, counts, total in sorted(snapshot):
            family.add_metric([upstream], _cumulative_buckets(counts), total)
        yield family


class Metrics:
    """Every metric the resolver exports, with one method per event.

    Thread-safe. `registry` is the dedicated `CollectorRegistry` to serve (a new one by
    default, so tests and several instances never share state with the global registry).

    The per-query counters are `itertools.count` objects: `next()` on one is a single C
    call, atomic under the GIL, so no lock is taken per query (a lock doubled the cost).
    The latency sum is a plain float add (no eval-breaker check between its load and store
    in CPython 3.11/3.12, so concurrent threads do not lose additions in practice).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()  # for the rare, non-atomic updates
        # (qtype code, protocol, result) -> counter. Keyed by the raw code so the hot path
        # skips the label mapping; codes fold into "other" at scrape time.
        self._queries: dict[tuple[int, str, str], itertools.count] = {}
        for code in (1, 28, 65):
            for protocol in PROTOCOLS:
                for result in RESULTS:
                    self._queries[(code, protocol, result)] = itertools.count()
        self._blocks: dict[tuple[str, str], itertools.count] = {}
        self._latency = [itertools.count() for _ in range(len(LATENCY_BUCKETS) + 1)]
        self._latency_sum = 0.0
        self._cache_hits = itertools.count()
        self._cache_misses = itertools.count()
        self._cache_evictions = 0
        self._cache_entries = 0
        self._cache_entries_fn: Callable[[], int] | None = None
        # Counts kept elsewhere and added in bulk (`merge_counts`), under the lock.
        self._bulk_queries: dict[tuple[int, str, str], int] = {}
        self._bulk_blocks: dict[tuple[str, str], int] = {}
        self._bulk_latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self._bulk_cache_hits = 0
        self._bulk_cache_misses = 0
        self._upstream_latency: dict[str, _LatencyCounts] = {}  # under the lock
        self._scrape_hooks: list[Callable[[], None]] = []
        self.registry.register(_HotPathCollector(self))

        r = self.registry
        self.upstream_queries = Counter(
            "filterdns_upstream_queries",
            "Queries sent to each upstream.",
            ["upstream"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "filterdns_upstream_errors",
            "Failed upstream exchanges by kind: " + ", ".join(UPSTREAM_ERROR_KINDS) + ".",
            ["upstream", "kind"],
            registry=r,
        )
        self.upstream_connections = Counter(
            "filterdns_upstream_connections",
            "Connections opened to encrypted upstreams, by transport (tls: DoT, https: DoH);"
            " far fewer than queries while connections are reused.",
            ["upstream", "transport"],
            registry=r,
        )
        # Registered here, after the hot-path collector (whose scrape hooks flush bulk
        # counts first) and in the place the family always had in the exposition.
        r.register(_UpstreamLatencyCollector(self))
        self.upstream_healthy_gauge = Gauge(
            "filterdns_upstream_healthy",
            "1 while an upstream is considered healthy, 0 while it is skipped as dead.",
            ["upstream"],
            registry=r,
        )
        self.list_entries_gauge = Gauge(
            "filterdns_list_entries", "Entries loaded from each list.", ["list"], registry=r
        )
        self.lists_loaded_timestamp = Gauge(
            "filterdns_lists_loaded_timestamp_seconds",
            "Unix time the lists in use were loaded (age = time() - this).",
            registry=r,
        )
        self.list_reloads = Counter(
            "filterdns_list_reloads",
            "List reloads (SIGHUP or timer) by result: success or failure.",
            ["result"],
            registry=r,
        )
        self.list_source_updates = Counter(
            "filterdns_list_source_updates",
            "Downloads of list sources by URL, by result (applied, unchanged, rejected: "
            "failed, truncated, shrunken or unreachable, the last good copy kept)",
            ["source", "result"],
            registry=r,
        )
        for result in RELOAD_RESULTS:
            self.list_reloads.labels(result)  # export 0 before the first reload
        self.config_reloads = config_reloads_counter(r)

    # -- per query (hot path) --

    def query(self, qtype_code: int, protocol: str, result: str, seconds: float) -> None:
        """Count one answered client query and its response time.

        `protocol` is the transport (`resolver.TRANSPORTS`: "udp", "tcp", "tls", "https",
        "quic"; only the first two are created ahead); `result` one of `RESULTS` ("cached"
        for answers from the cache, "blocked" for any block, including answers blocked
        after inspection).
        """
        try:
            next(self._queries[(qtype_code, protocol, result)])
        except KeyError:
            # setdefault is atomic: two threads adding the same key share one counter.
            next(self._queries.setdefault((qtype_code, protocol, result), itertools.count()))
        next(self._latency[bisect_left(LATENCY_BUCKETS, seconds)])
        self._latency_sum += seconds

    def block(self, category: str | None, list_name: str | None) -> None:
        """Count one block by its verdict's canonical category and list (config values)."""
        key = (category or "none", list_name or "none")
        try:
            next(self._blocks[key])
        except KeyError:
            next(self._blocks.setdefault(key, itertools.count()))

    def merge_counts(
        self,
        *,
        queries: dict[tuple[int, str, str], int],
        blocks: dict[tuple[str, str], int],
        latency: list[int],
        latency_sum: float,
        cache_hits: int,
        cache_misses: int,
    ) -> None:
        """Add counts gathered elsewhere, e.g. flushed from the C fast path once a second.

        `queries` is keyed like `query()` ((qtype code, protocol, result)), `blocks` like
        `block()`, `latency` holds one count per bucket of LATENCY_BUCKETS plus +Inf.
        """
        with self._lock:
            for key, n in queries.items():
                self._bulk_queries[key] = self._bulk_queries.get(key, 0) + n
            for labels, n in blocks.items():
                self._bulk_blocks[labels] = self._bulk_blocks.get(labels, 0) + n
            for i, n in enumerate(latency):
                self._bulk_latency[i] += n
            self._latency_sum += latency_sum
            self._bulk_cache_hits += cache_hits
            self._bulk_cache_misses += cache_misses

    def on_scrape(self, hook: Callable[[], None]) -> None:
        """Call `hook()` at the start of every scrape (to flush counts kept elsewhere)."""
        self._scrape_hooks.append(hook)

    def cache_hit(self) -> None:
        next(self._cache_hits)

    def cache_miss(self) -> None:
        next(self._cache_misses)

    def cache_evicted(self, count: int = 1) -> None:
        with self._lock:
            self._cache_evictions += count

    def cache_entries(self, count: int) -> None:
        """Set the cache size (or use `watch_cache_entries` to read it at scrape time)."""
        self._cache_entries = count

    def watch_cache_entries(self, read: Callable[[], int]) -> None:
        """Read the cache size from `read()` at each scrape, costing nothing per query."""
        self._cache_entries_fn = read

    # -- upstreams --

    def upstream_query(self, upstream: str, seconds: float | None = None) -> None:
        """Count a query sent to `upstream` ("ADDR:PORT"); `seconds` when it succeeded."""
        self.upstream_queries.labels(upstream).inc()
        if seconds is not None:
            with self._lock:
                h = self._upstream_latency_of(upstream)
                h.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
                h.total += seconds

    def upstream_error(self, upstream: str, kind: str) -> None:
        """Count a failed exchange; `kind` is one of `UPSTREAM_ERROR_KINDS`."""
        if kind not in UPSTREAM_ERROR_KINDS:
            raise ValueError(f"unknown upstream error kind {kind!r}")
        self.upstream_errors.labels(upstream, kind).inc()

    def merge_upstream(
        self,
        upstream: str,
        *,
        queries: int,
        latency: list[int],
        latency_sum: float,
        errors: dict[str, int],
    ) -> None:
        """Add counts for `upstream` gathered elsewhere, e.g. flushed from the C fast path.

        `latency` holds one count per bucket of LATENCY_BUCKETS plus +Inf, for successful
        exchanges only, and `latency_sum` their total seconds; `errors` maps kinds from
        `UPSTREAM_ERROR_KINDS` to counts. Raises ValueError, counting nothing, on an unknown
        kind, a `latency` of the wrong length or a negative count.
        """
        for kind in errors:
            if kind not in UPSTREAM_ERROR_KINDS:
                raise ValueError(f"unknown upstream error kind {kind!r}")
        if len(latency) != len(LATENCY_BUCKETS) + 1:
            raise ValueError(f"latency has {len(latency)} buckets, not {len(LATENCY_BUCKETS) + 1}")
        if queries < 0 or min(latency) < 0 or any(n < 0 for n in errors.values()):
            raise ValueError(f"negative count in upstream counts for {upstream!r}")
        # Zero counts are skipped so an idle flush creates no series, as no event would.
        if queries:
            self.upstream_queries.labels(upstream).inc(queries)
        for kind, n in errors.items():
            if n:
                self.upstream_errors.labels(upstream, kind).inc(n)
        if any(latency):
            with self._lock:
                h = self._upstream_latency_of(upstream)
                for i, n in enumerate(latency):
                    h.counts[i] += n
                h.total += latency_sum

    def _upstream_latency_of(self, upstream: str) -> _LatencyCounts:
        """`upstream`'s histogram, created on first use; call with the lock held."""
        h = self._upstream_latency.get(upstream)
        if h is None:
            h = self._upstream_latency[upstream] = _LatencyCounts()
        return h

    def upstream_healthy(self, upstream: str, healthy: bool) -> None:
        self.upstream_healthy_gauge.labels(upstream).set(1 if healthy else 0)

    def upstream_connected(self, upstream: str, transport: str) -> None:
        """Count a connection opened to an encrypted upstream."""
        if transport not in UPSTREAM_TRANSPORTS:
            raise ValueError(f"unknown upstream transport {transport!r}")
        self.upstream_connections.labels(upstream, transport).inc()

    def upstreams_in_use(self, upstreams: Iterable[str]) -> None:
        """The configured upstreams, healthy until they fail; others are no longer shown."""
        self.upstream_healthy_gauge.clear()
        for name in upstreams:
            self.upstream_healthy(name, True)

    # -- lists --

    def lists_loaded(self, entries: dict[str, int], when: float | None = None) -> None:
        """Record a successful (re)load: entries per list name, and the load time."""
        self.list_entries_gauge.clear()  # a list dropped from the config disappears
        for name, count in entries.items():
            self.list_entries_gauge.labels(name).set(count)
        self.lists_loaded_timestamp.set(time.time() if when is None else when)

    def list_source_update(self, source: str, result: str) -> None:
        """Count one URL source's update (`source` names come from the config: bounded)."""
        self.list_source_updates.labels(source, result).inc()

    def list_reload(self, ok: bool) -> None:
        """Count a reload attempt (the initial load is not a reload)."""
        self.list_reloads.labels("success" if ok else "failure").inc()

    def config_reload(self, result: str) -> None:
        """Count a configuration reload: "applied" or "rejected"."""
        self.config_reloads.labels(result).inc()


def config_reloads_counter(registry: CollectorRegistry) -> Counter:
    """`filterdns_config_reloads_total{result}` in `registry`, both results exported from
    the start. The parent of several workers counts in its own registry (it re-reads)."""
    counter = Counter(
        "filterdns_config_reloads",
        "Configuration reloads (SIGHUP, POST /api/reload) by result: applied, or rejected "
        "(the file did not validate; the running configuration kept).",
        ["result"],
        registry=registry,
    )
    for result in RESULTS_OF_RECONFIGURE:
        counter.labels(result)
    return counter


class MetricsServer(NamedTuple):
    """A running /metrics listener. `port` is the bound port (useful when asked for 0)."""

    host: str
    port: int
    httpd: object
    thread: object

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()  # type: ignore[attr-defined]
        self.httpd.server_close()  # type: ignore[attr-defined]


def health(registry: CollectorRegistry) -> tuple[bool, dict[str, object]]:
    """Whether this resolver can answer, read from its own metrics (so it also holds for
    the parent of several workers, whose registry adds theirs up).

    Healthy when lists are loaded and at least one upstream is not marked dead (an upstream
    not yet marked either way counts as reachable).
    """
    loaded = registry.get_sample_value("filterdns_lists_loaded_timestamp_seconds") or 0.0
    states = {
        sample.labels.get("upstream", ""): sample.value
        for metric in registry.collect()
        if metric.name == "filterdns_upstream_healthy"
        for sample in metric.samples
    }
    reachable = not states or any(value >= 1 for value in states.values())
    report = {
        "lists_loaded": loaded > 0,
        "lists_loaded_at": loaded or None,
        "upstream_reachable": reachable,
        "upstreams": {name: value >= 1 for name, value in sorted(states.items())},
    }
    return loaded > 0 and reachable, report


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # one line per scrape would drown the resolver's own log


def start_metrics_server(addr: str, port: int, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on http://addr:port/metrics, and `/healthz` for load balancers
    (200 or 503 with a JSON body saying why), from a thread of its own.

    Raises OSError when the address cannot be bound (e.g. the port is in use).
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, report = health(registry)
            body = json.dumps({"status": "ok" if ok else "unavailable", **report}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    httpd = make_server(addr, port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(addr, httpd.server_address[1], httpd, thread)

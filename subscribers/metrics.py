"""Prometheus figures of the subscribers (no per-client labels)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from subscribers.radius import DROP_REASONS, STATUSES


class SubscriberCollector:
    """Reads the service's and the RADIUS listener's counters at scrape time. `radius` is
    the listener, or a callable that returns it (None until it listens)."""

    def __init__(self, subscribers: Any, radius: Any = None) -> None:
        self.subscribers = subscribers
        self._radius = radius if callable(radius) else lambda: radius

    def collect(self) -> Iterator[Any]:
        service = self.subscribers.service
        table = service.table
        yield GaugeMetricFamily(
            "filterdns_subscriber_addresses",
            "Addresses and prefixes in the subscribers' serving table.",
            value=table.count if table is not None else 0,
        )
        yield GaugeMetricFamily(
            "filterdns_subscriber_table_bytes",
            "Size of the subscribers' serving table (one copy, mapped by every worker).",
            value=table.nbytes if table is not None else 0,
        )
        yield CounterMetricFamily(
            "filterdns_subscriber_changes_applied",
            "Address changes applied to the serving table from the change log.",
            value=service.applied,
        )
        yield GaugeMetricFamily(
            "filterdns_subscriber_database_up",
            "1 while the subscribers' database answers (else the table is kept as it is).",
            value=1 if service.db_ok else 0,
        )
        radius = self._radius()
        if radius is None:
            return
        requests = CounterMetricFamily(
            "filterdns_radius_requests",
            "Valid RADIUS accounting requests, by Acct-Status-Type.",
            labels=["status"],
        )
        for status in STATUSES:
            requests.add_metric([status], radius.requests.get(status, 0))
        yield requests
        dropped = CounterMetricFamily(
            "filterdns_radius_dropped",
            "RADIUS packets dropped: unknown NAS, malformed, or a wrong authenticator.",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            dropped.add_metric([reason], radius.dropped.get(reason, 0))
        yield dropped

"""Rate limits per client network (`[ratelimit]`, docs/ratelimit.md).

The buckets live in C (`_ratelimit.RateLimiter`), one table per worker process, shared by
the UDP fast path and the Python chain (TCP, and UDP when the fast path is off). This
module builds the limiter from the configuration and exports its counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dns_resolver.fast._ratelimit import ACTIONS, RateLimiter
from fdconfig.ratelimit import RateLimitConfig

# What `RateLimiter.limit` says of a query.
PASS = 0
LIMITED = 1
LIMITED_LOG = 2  # over the limit, the first time this second for its network: log a line
RESULT = "ratelimited"  # the query log's `result` for a limited query


def build_limiter(config: RateLimitConfig) -> RateLimiter | None:
    """The limiter for `config`, or None when rate limiting is off."""
    if not config.enabled:
        return None
    return RateLimiter(
        config.qps,
        config.burst,
        config.ipv4_prefix,
        config.ipv6_prefix,
        ACTIONS.index(config.action),
        config.exempt,
        config.max_networks,
    )


class RateLimitCollector:
    """`filterdns_ratelimited_total{action}`: limited queries by what they got (no
    per-client labels: the set of clients is unbounded)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "filterdns_ratelimited",
            "Queries over their client network's rate limit, by the action they got "
            "(drop, refused, truncate; TCP queries are refused).",
            labels=["action"],
        )
        for action, n in self.limiter.counters().items():
            family.add_metric([action], n)
        yield family

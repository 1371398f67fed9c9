"""`[cache]`: the response cache (RFC 2308 negative caching, RFC 8767 serve-stale, prefetch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import Table, Where, doc, fill


class CacheTable(Table):
    """The response cache. Answers are served with their TTLs decremented by the time spent
    in the cache."""

    enabled: Annotated[bool, doc("Cache upstream answers.")] = True
    max_entries: Annotated[
        int, doc("Entry limit; the least recently used entry is evicted beyond it.", ge=1)
    ] = 100_000
    min_ttl: Annotated[
        int,
        doc("Lower bound on the TTL an answer is cached for (must not exceed `max_ttl`).", ge=0),
    ] = 0
    max_ttl: Annotated[int, doc("Upper bound on the TTL an answer is cached for.", ge=1)] = 86_400
    negative_max_ttl: Annotated[
        int,
        doc(
            "Upper bound on how long NXDOMAIN/NODATA answers are cached (their TTL is the SOA "
            "minimum, RFC 2308).",
            ge=0,
        ),
    ] = 3_600
    serve_stale: Annotated[
        bool, doc("When every upstream fails, answer from expired entries (RFC 8767).")
    ] = False
    stale_answer_ttl: Annotated[int, doc("TTL put on stale answers.", ge=1)] = 30
    stale_max_age: Annotated[
        int, doc("Seconds past expiry an entry may still be served stale.", ge=1)
    ] = 86_400
    prefetch: Annotated[bool, doc("Refresh popular entries shortly before they expire.")] = False
    prefetch_threshold: Annotated[
        float,
        doc(
            "Refresh when less than this fraction (0..1] of the original TTL remains.",
            gt=0,
            le=1.0,
        ),
    ] = 0.1
    prefetch_min_hits: Annotated[
        int, doc("Hits an entry needs to be considered popular.", ge=1)
    ] = 3


@dataclass(frozen=True)
class CacheConfig:
    """The response cache (RFC 2308 negative caching, RFC 8767 serve-stale, prefetch)."""

    enabled: bool = True
    max_entries: int = 100_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_max_ttl: int = 3_600
    serve_stale: bool = False
    stale_answer_ttl: int = 30
    stale_max_age: int = 86_400
    prefetch: bool = False
    prefetch_threshold: float = 0.1
    prefetch_min_hits: int = 3


def build(table: CacheTable, where: Where) -> CacheConfig:
    if table.min_ttl > table.max_ttl:
        raise where.error(
            "cache.min_ttl",
            f"must not exceed cache.max_ttl ({table.max_ttl}), got {table.min_ttl}",
        )
    return fill(CacheConfig, table)

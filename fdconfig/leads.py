"""`[leads]`: which newly observed domains become leads in the review queue (docs/leads.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import Table, Where, doc, fill, parse_duration


class LeadsTable(Table):
    """When a newly observed domain (`[observed]`) becomes a lead: a review-queue item of kind
    `lead`, source `observed`. Only counts of client networks are kept, never addresses."""

    min_clients: Annotated[
        int,
        doc("Distinct client networks (see `ipv4_prefix`) that must ask within `window`.", ge=1),
    ] = 20
    min_queries: Annotated[
        int, doc(
            "Queries (misses, and a new cache entry's first hits) that must arrive within "
            "`window`.",
            ge=1,
        )
    ] = 1
    window: Annotated[
        float | str,
        doc("How long a newly observed domain may take to earn attention: seconds or `\"1h\"`."),
    ] = "1h"
    max_per_day: Annotated[
        int, doc("Leads raised per day at most, to keep the queue readable.", ge=0)
    ] = 100
    require_signal: Annotated[
        bool,
        doc(
            "Raise only domains with a signal (suspect text rule, a listed CNAME target or "
            "answer address, a look-alike of a host a reviewer blocked). `false`: enough "
            "clients alone raise a lead."
        ),
    ] = True
    ipv4_prefix: Annotated[
        int, doc("IPv4 clients are counted by network of this length.", ge=8, le=32)
    ] = 24
    ipv6_prefix: Annotated[
        int, doc("IPv6 clients are counted by network of this length.", ge=16, le=128)
    ] = 48
    max_candidates: Annotated[
        int, doc("Newly observed domains held at once; the oldest go first beyond.", ge=16)
    ] = 20_000


@dataclass(frozen=True)
class LeadsConfig:
    """Lead thresholds (docs/leads.md); `window` in seconds."""

    min_clients: int = 20
    min_queries: int = 1
    window: float = 3600.0
    max_per_day: int = 100
    require_signal: bool = True
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    max_candidates: int = 20_000


def build(table: LeadsTable, where: Where) -> LeadsConfig:
    seconds = where.one("leads.window", table.window, parse_duration)  # type: ignore[arg-type]
    return fill(LeadsConfig, table, window=seconds)

"""`[ratelimit]`: a token bucket per client network, so no client (or spoofed victim) can
draw an unbounded stream of answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fdconfig.fields import IPNetwork, Table, Where, doc, fill, parse_network

Action = Literal["drop", "refused", "truncate"]
ACTIONS: tuple[str, ...] = get_args(Action)


class RateLimitTable(Table):
    """Rate limits per client network (docs/ratelimit.md). Limits are kept per worker
    process: with `server.workers = N` a client spread over N workers by the kernel may get
    up to N times the rate."""

    enabled: Annotated[bool, doc("Limit queries per client network. Off unless turned on.")] = (
        False
    )
    qps: Annotated[
        float, doc("Queries per second each client network may send, sustained.", gt=0)
    ] = 20.0
    burst: Annotated[
        int,
        doc(
            "Queries a client network may send at once above `qps` (the bucket's size; an "
            "idle network starts with a full bucket).",
            ge=1,
        ),
    ] = 100
    ipv4_prefix: Annotated[
        int, doc("IPv4 clients share one bucket per network of this length.", ge=1, le=32)
    ] = 24
    ipv6_prefix: Annotated[
        int, doc("IPv6 clients share one bucket per network of this length.", ge=1, le=128)
    ] = 56
    action: Annotated[
        Action,
        doc(
            'What a query over the limit gets: `"drop"` no answer; `"refused"` REFUSED; '
            '`"truncate"` an empty answer with TC set, so a real client retries over TCP. '
            "TCP queries have a bucket of their own per network, at the same rate; over it "
            "they are refused, whatever the action."
        ),
    ] = "truncate"
    exempt: Annotated[
        tuple[str, ...],
        doc(
            "Client networks never limited: trusted forwarders and routers that aggregate "
            "many clients. A bare address is a /32 or /128."
        ),
    ] = ()
    max_networks: Annotated[
        int,
        doc(
            "Client networks tracked at once per worker (rounded up to a power of two, at "
            "least 64); beyond, the least recently seen network of the same hash set is "
            "forgotten (and starts again with a full bucket).",
            ge=64,
            le=1 << 26,
        ),
    ] = 65_536


@dataclass(frozen=True)
class RateLimitConfig:
    """Rate limits per client network; `enabled` false means none."""

    enabled: bool = False
    qps: float = 20.0
    burst: int = 100
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    action: str = "truncate"
    exempt: tuple[IPNetwork, ...] = ()
    max_networks: int = 65_536


def build(table: RateLimitTable, where: Where) -> RateLimitConfig:
    return fill(
        RateLimitConfig,
        table,
        exempt=where.each("ratelimit.exempt", table.exempt, parse_network),
    )

"""`[upstream]`: where cache misses are forwarded."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

from fdconfig.fields import Address, Table, Where, doc, fill, parse_address

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
Strategy = Literal["failover", "parallel"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


class UpstreamTable(Table):
    """Where cache misses are forwarded."""

    servers: Annotated[
        tuple[str, ...],
        doc(
            "Upstream resolvers, `ADDR[:PORT]`. Empty: the `nameserver` lines of "
            "`/etc/resolv.conf`, minus any that is one of our own listen addresses (also a "
            "loopback address when we listen on the wildcard address at the same port). An "
            "upstream equal to a listen address is an error."
        ),
    ] = ()
    strategy: Annotated[
        Strategy,
        doc(
            '`"failover"`: ask the healthy upstreams in order; `"parallel"`: ask all healthy '
            "upstreams at once and use the first good answer."
        ),
    ] = "failover"
    timeout: Annotated[
        float, doc("Seconds to wait for one upstream attempt (at most 60).", gt=0, le=60)
    ] = 2.0
    max_failures: Annotated[
        int,
        doc(
            "Consecutive failures (timeouts, errors, spoofed or garbage replies) before an "
            "upstream is marked dead and skipped.",
            ge=1,
        ),
    ] = 3
    retry_dead_after: Annotated[
        float, doc("Seconds a dead upstream is skipped before it is tried again.", gt=0)
    ] = 30.0


@dataclass(frozen=True)
class UpstreamConfig:
    """Where cache misses are forwarded.

    `from_resolv_conf` is true when `servers` was not configured and came from `resolv_conf`;
    `apply_overrides` then recomputes it when `--listen` changes what "ourselves" means.
    """

    servers: tuple[Address, ...] = ()
    strategy: str = "failover"
    timeout: float = 2.0
    retry_dead_after: float = 30.0
    max_failures: int = 3
    from_resolv_conf: bool = False
    resolv_conf: str = DEFAULT_RESOLV_CONF


def build(
    table: UpstreamTable, where: Where, listen: Sequence[Address], resolv_conf: str
) -> UpstreamConfig:
    servers = where.each(
        "upstream.servers", table.servers, lambda t: parse_address(t, default_port=53)
    )
    for i, server in enumerate(servers):
        if is_ourselves(server, listen):
            raise where.error(
                f"upstream.servers[{i}]", f"{server} is one of our own listen addresses"
            )
    from_resolv = not servers
    if from_resolv:
        servers = upstreams_from_resolv_conf(resolv_conf, listen)
    return fill(
        UpstreamConfig,
        table,
        servers=tuple(dict.fromkeys(servers)),
        from_resolv_conf=from_resolv,
        resolv_conf=resolv_conf,
    )


def read_resolv_conf(path: str | os.PathLike[str] = DEFAULT_RESOLV_CONF) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order; [] if it is missing.

    Comments (`#`, `;`) and malformed addresses are skipped, as the C library does.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    servers: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(words[1])))
            except ValueError:
                continue
    return servers


def is_ourselves(server: Address, listen: Iterable[Address]) -> bool:
    """True if forwarding to `server` would send a query back to one of our listeners."""
    server_ip = ipaddress.ip_address(server.host.split("%", 1)[0])
    for own in listen:
        if own.port != server.port:
            continue
        own_ip = ipaddress.ip_address(own.host.split("%", 1)[0])
        if own_ip == server_ip:
            return True
        # A wildcard listener also answers on every local address; loopback is the one a
        # resolv.conf names in practice (127.0.0.1, ::1, 127.0.0.53 is another daemon's).
        if own_ip.is_unspecified and server_ip.is_loopback and own_ip.version == server_ip.version:
            return True
    return False


def upstreams_from_resolv_conf(path: str, listen: Sequence[Address]) -> tuple[Address, ...]:
    servers = (Address(ns, 53) for ns in read_resolv_conf(path))
    return tuple(s for s in servers if not is_ourselves(s, listen))

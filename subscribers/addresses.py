"""Subscriber addresses: IPv4 /32s and IPv6 prefixes /48../64, as text and as table keys."""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple

V6_MIN, V6_MAX = 48, 64


class TableKey(NamedTuple):
    """An address as the serving table keys it (dns_resolver/fast/_subtable.h)."""

    plen: int  # 32 for IPv4, 48..64 for IPv6
    key: int  # the IPv4 address, or the prefix's first 64 bits


def canonical(text: str) -> str:
    """`198.51.100.7/32` or `2001:db8:7::/56` from what a user or a NAS wrote.

    Raises:
        ValueError: not an IPv4 address or an IPv6 prefix of /48 to /64.
    """
    value = text.strip()
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or prefix") from None
    if net.version == 4:
        if net.prefixlen != 32:
            raise ValueError(f"{value!r}: an IPv4 address is a /32")
        return f"{net.network_address}/32"
    if not V6_MIN <= net.prefixlen <= V6_MAX:
        raise ValueError(f"{value!r}: an IPv6 prefix is /{V6_MIN} to /{V6_MAX}")
    return net.compressed


def table_key(address: str) -> TableKey:
    """The table key of a canonical address (inet_pton: a full build parses millions)."""
    text, _, plen = address.partition("/")
    if ":" in text:
        return TableKey(int(plen), int.from_bytes(socket.inet_pton(socket.AF_INET6, text)[:8]))
    return TableKey(32, int.from_bytes(socket.inet_aton(text)))


def containing(address: str) -> list[str]:
    """The canonical addresses that would hold the client address `address`, most specific
    first (what `GET /api/subscribers?address=` looks up).

    Raises:
        ValueError: not an IP address.
    """
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        raise ValueError(f"{address.strip()!r} is not an IP address") from None
    if ip.version == 4:
        return [f"{ip}/32"]
    return [
        ipaddress.ip_network(f"{ip}/{plen}", strict=False).compressed
        for plen in range(V6_MAX, V6_MIN - 1, -1)
    ]

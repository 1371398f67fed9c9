"""`[access]`: which clients may query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import IPNetwork, Table, Where, doc, parse_network

DEFAULT_ALLOW_TEXT = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)
DEFAULT_ALLOW: tuple[IPNetwork, ...] = tuple(parse_network(c) for c in DEFAULT_ALLOW_TEXT)


class AccessTable(Table):
    """Which clients may query. Refused clients get REFUSED."""

    allow: Annotated[
        tuple[str, ...],
        doc(
            "Client networks that may query. The default (loopback and private ranges) means "
            "a default install is never an open resolver. A bare address is a /32 or /128."
        ),
    ] = DEFAULT_ALLOW_TEXT
    deny: Annotated[
        tuple[str, ...], doc("Client networks refused even when `allow` covers them.")
    ] = ()


@dataclass(frozen=True)
class AccessConfig:
    """Which clients may query: a source in `deny` is refused even when `allow` covers it."""

    allow: tuple[IPNetwork, ...] = DEFAULT_ALLOW
    deny: tuple[IPNetwork, ...] = ()


def build(table: AccessTable, where: Where) -> AccessConfig:
    return AccessConfig(
        allow=where.each("access.allow", table.allow, parse_network),
        deny=where.each("access.deny", table.deny, parse_network),
    )

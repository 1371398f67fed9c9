"""Who may query: CIDR allow and deny lists (deny wins), REFUSED for everyone else.

The default allows loopback and private ranges only, so a default install is never an
open resolver. Decisions are memoised per client address (bounded), because the set of
clients is small next to the number of queries and `ipaddress` objects are slow to build.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fdconfig import DEFAULT_ALLOW

_MEMO_LIMIT = 65536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str | Network]) -> tuple[Network, ...]:
    """Parse CIDR strings (parsed networks pass through); a ValueError names the bad one."""
    networks = []
    for item in cidrs:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"bad CIDR {item!r}: {exc}") from None
    return tuple(networks)


def client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a client address as sockets report it (scope id dropped), or None.

    An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d: that is the IPv4
    address, for ACLs, policies and anonymisation alike.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Acl:
    """Allow/deny decision for a client address. Deny beats allow."""

    def __init__(
        self, allow: Iterable[str | Network] = DEFAULT_ALLOW, deny: Iterable[str | Network] = ()
    ) -> None:
        self.allow = parse_networks(allow)
        self.deny = parse_networks(deny)
        self._memo: dict[str, bool] = {}

    def allowed(self, address: str) -> bool:
        """True when `address` (an IP literal, possibly with a %scope) may query."""
        decision = self._memo.get(address)
        if decision is None:
            decision = self._decide(address)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[address] = decision
        return decision

    def _decide(self, address: str) -> bool:
        ip = client_ip(address)
        if ip is None:
            return False
        if any(ip in net for net in self.deny if net.version == ip.version):
            return False
        return any(ip in net for net in self.allow if net.version == ip.version)

"""Bypass prevention: names that tell devices to go around the filter, answered "no".

- `use-application-dns.net`: Firefox's canary domain. NXDOMAIN (or NODATA) tells Firefox
  not to turn on DNS over HTTPS by default, which would skip the filter.
- `mask.icloud.com`, `mask-h2.icloud.com`: Apple documents that NXDOMAIN for these makes
  iCloud Private Relay tell the user it is unavailable on this network.
- `resolver.arpa` (RFC 9462, Discovery of Designated Resolvers): NODATA, so clients do not
  learn an encrypted resolver to upgrade to. (We are not one.)

With bypass prevention a policy also blocks the `filter-bypass` category (DoH endpoints,
VPNs, proxies; UT1 `doh`, `vpn`, `redirector`).
"""

from __future__ import annotations

from collections.abc import Iterator

NXDOMAIN = "nxdomain"
NODATA = "nodata"

CANARIES: dict[str, str] = {
    "use-application-dns.net": NXDOMAIN,
    "mask.icloud.com": NXDOMAIN,
    "mask-h2.icloud.com": NXDOMAIN,
    "resolver.arpa": NODATA,
}
"""Name (and every name below it) -> how it is answered."""

BYPASS_CATEGORY = "filter-bypass"


def suffixes(name: str) -> Iterator[str]:
    """`name` and every parent on label boundaries, deepest first (`a.b.c`, `b.c`, `c`)."""
    while True:
        yield name
        dot = name.find(".")
        if dot < 0:
            return
        name = name[dot + 1 :]


def canary(name: str) -> str | None:
    """How bypass prevention answers `name` (normalised), or None if it is not a canary."""
    return next((CANARIES[s] for s in suffixes(name) if s in CANARIES), None)


__all__ = ["BYPASS_CATEGORY", "CANARIES", "NODATA", "NXDOMAIN", "canary", "suffixes"]

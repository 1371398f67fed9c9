"""dnsmasq configuration lines as blocklists use them.

Accepted (every domain covers itself and the names below it, as dnsmasq does):

- `address=/example.com/0.0.0.0`, `address=/a.com/b.com/::`, `address=/a.com/#`,
  `address=/a.com/` (NXDOMAIN): a block, for one or more domains, when the answer is empty,
  `#`, or a sink-hole address (unspecified or loopback);
- `server=/example.com/` and `local=/example.com/` (no upstream: answered locally, i.e.
  NXDOMAIN): a block;
- `#` comment lines; `*.example.com` (dnsmasq 2.86 wildcard) is Scope.BELOW.

Reported: `address=` to a routable address (local data, not a block), `server=` with an
upstream (a forwarding rule), `/#/` (every domain), any other directive, invalid names.
A `#` after the data is not a comment in dnsmasq syntax, so only whole-line comments are.
"""

from __future__ import annotations

from filtercore.entries import Entry, ParsedList, Problem
from filtercore.errors import InvalidNameError
from filtercore.formats._common import is_sinkhole, parse_each_line, parse_host

_DIRECTIVES = ("address", "server", "local")


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse dnsmasq directives into `out` (see `formats.TextParser`)."""
    parse_each_line(text, source, out, category, _parse_directive)


def _parse_directive(
    line: str, number: int, source: str, out: ParsedList, category: str | None
) -> str | None:
    """Add the entries of one directive; return why it cannot be used, or None."""
    directive, equals, value = line.partition("=")
    directive = directive.strip().lower()
    if not equals or directive not in _DIRECTIVES:
        return f"unsupported dnsmasq directive {directive!r}"
    value = value.strip()
    if not value.startswith("/") or value.count("/") < 2:
        return f"{directive}= without /domain/ part"
    parts = value[1:].split("/")
    target = parts[-1].strip()
    domains = [domain.strip() for domain in parts[:-1]]
    if directive == "address" and target not in ("", "#") and not is_sinkhole(target):
        return f"address= to {target!r} (not a sink hole): local data, not a block"
    if directive == "server" and target:
        return f"server= with upstream {target!r}: a forwarding rule, not a block"
    if directive == "local" and target:
        return f"local= with {target!r} after the domains"
    if not any(domains):
        return "no domain between the slashes"
    for domain in domains:
        if domain == "#":
            return "/#/ matches every domain: not a list entry"
        if not domain:
            return "empty domain between slashes"
    for domain in domains:
        try:
            kind, name, scope = parse_host(domain)
        except InvalidNameError as exc:
            out.problems.append(Problem(source, number, line, f"{domain!r}: {exc.reason}"))
            continue
        out.entries.append(Entry(kind, name, number, source, scope=scope, category=category))
    return None

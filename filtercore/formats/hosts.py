"""Hosts files used as blocklists: `0.0.0.0 a.example b.example`, one address a line.

Accepted: any number of names after the address, `#` comments (whole-line or inline),
IPv4 and IPv6 sink-hole addresses (unspecified or loopback: `0.0.0.0`, `127.0.0.1`, `::`,
`::1`). Every name becomes a Kind.DOMAIN entry covering the name and the names below it,
as DESIGN.md's verdict semantics say of every domain entry.

Ignored without a report: the host-file boilerplate names `localhost`,
`localhost.localdomain`, `broadcasthost`, `local`, `ip6-*`, and names that are themselves
addresses (`0.0.0.0 0.0.0.0`).

Reported: a first field that is not an address, a line with no name, an address that is
not a sink hole (that maps a name to a real host: local data, not a block), invalid names.
"""

from __future__ import annotations

from filtercore.entries import Entry, Kind, ParsedList, Problem
from filtercore.errors import InvalidNameError
from filtercore.formats._common import content_lines, cut_comment, is_sinkhole
from filtercore.normalize import normalize_ip, normalize_name

IGNORED_NAMES = frozenset({"localhost", "localhost.localdomain", "broadcasthost", "local"})


def is_boilerplate(name: str) -> bool:
    """True for the names every hosts file carries for the machine itself."""
    lowered = name.lower().rstrip(".")
    return lowered in IGNORED_NAMES or lowered.startswith("ip6-")


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse a hosts file into `out` (see `formats.TextParser`)."""
    problems = out.problems
    for number, raw in content_lines(text, source, out):
        fields = cut_comment(raw).split()
        if not fields:
            continue
        address = normalize_ip(fields[0])
        if address is None:
            problems.append(Problem(source, number, raw, "first field is not an IP address"))
            continue
        names = [name for name in fields[1:] if not is_boilerplate(name)]
        if len(fields) == 1:
            problems.append(Problem(source, number, raw, "address without a host name"))
            continue
        if not names:
            continue
        if not is_sinkhole(address):
            problems.append(
                Problem(
                    source,
                    number,
                    raw,
                    f"address {address} is not a sink hole (0.0.0.0, ::, loopback): "
                    "local data, not a block",
                )
            )
            continue
        for name in names:
            if normalize_ip(name) is not None:
                continue
            try:
                value = normalize_name(name)
            except InvalidNameError as exc:
                problems.append(Problem(source, number, raw, f"{name!r}: {exc.reason}"))
                continue
            out.entries.append(Entry(Kind.DOMAIN, value, number, source, category=category))

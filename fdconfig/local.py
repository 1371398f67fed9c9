"""`[local]`: names answered by filterdns itself (zone-file records, hosts files), and the
record parsing `[policies.NAME] records` shares (docs/local-names.md)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fdconfig.fields import Table, Where, doc

MAX_TTL = 604_800
DEFAULT_TTL = 300

# The record types a local name may have (RFC 1035/2782/3596 numbers).
TYPES = {"A": 1, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
TYPE_NAMES = {number: name for name, number in TYPES.items()}


def _reverse_zones() -> tuple[str, ...]:
    v4 = ["10", "254.169", "168.192"]
    v4 += [f"{n}.172" for n in range(16, 32)] + [f"{n}.100" for n in range(64, 128)]
    v6 = ["c.f", "d.f", "8.e.f", "9.e.f", "a.e.f", "b.e.f"]
    return tuple(f"{z}.in-addr.arpa" for z in v4) + tuple(f"{z}.ip6.arpa" for z in v6)


LOCALLY_SERVED = frozenset(
    ("local", "localhost", "invalid", "test", "home.arpa", *_reverse_zones())
)
"""Zones answered NXDOMAIN unless a rule forwards them or a local record names them:
RFC 6761 (`localhost`, `invalid`, `test`), RFC 6762 (`local`), RFC 8375 (`home.arpa`) and
the reverse zones of RFC 1918, RFC 6598 (100.64/10), link-local (169.254/16, fe80::/10)
and ULA (fc00::/7) addresses."""


class LocalTable(Table):
    """Names filterdns answers itself, with the AA bit, before any forwarding rule."""

    records: Annotated[
        tuple[str, ...],
        doc(
            'Records as zone-file lines, `"NAME [TTL] [IN] TYPE DATA"` (like '
            '`"printer.lan 300 IN A 192.168.1.9"` or `"nas.lan CNAME printer.lan"`); types '
            "A, AAAA, CNAME, TXT, MX, SRV and PTR. Names are absolute."
        ),
    ] = ()
    records_file: Annotated[
        str,
        doc(
            "A file of records in zone-file syntax (`$ORIGIN` and `$TTL` allowed), relative "
            'to the config file; "" for none.'
        ),
    ] = ""
    hosts_files: Annotated[
        tuple[str, ...],
        doc(
            "Files in `/etc/hosts` syntax (`ADDRESS NAME [ALIAS...]`), relative to the "
            "config file; re-read on SIGHUP."
        ),
    ] = ()
    ptr: Annotated[
        bool,
        doc("Answer the reverse lookup (PTR) of each local A and AAAA address with its name."),
    ] = True
    nodefault: Annotated[
        tuple[str, ...],
        doc(
            "Locally served zones to forward like any other name instead of answering them "
            'NXDOMAIN (as Unbound\'s `local-zone: "test." nodefault`), e.g. `["test"]` when '
            "the upstream serves a test domain. The zones: `local`, `localhost`, `invalid`, "
            "`test`, `home.arpa` and the private reverse zones (RFC 1918, RFC 6598, "
            "169.254/16, fc00::/7, fe80::/10)."
        ),
    ] = ()
    ttl: Annotated[
        int,
        doc(
            "TTL of records that give none, of hosts-file records and of local NXDOMAIN "
            "answers (locally served zones).",
            ge=0,
            le=MAX_TTL,
        ),
    ] = DEFAULT_TTL


@dataclass(frozen=True)
class LocalRecord:
    """One local record: `name` normalised (lower case, no trailing dot), `rdata` in wire
    form without compression; `target` is the name a CNAME or PTR points to."""

    name: str
    rtype: int
    ttl: int
    rdata: bytes
    target: str = ""

    def text(self) -> str:
        """The record as a zone-file line (what `filterdns config show` writes)."""
        from dnslib import QTYPE, RDMAP, DNSBuffer  # type: ignore[import-untyped]

        kind = QTYPE.get(self.rtype)
        data = RDMAP[kind].parse(DNSBuffer(self.rdata), len(self.rdata))
        return f"{self.name}. {self.ttl} IN {kind} {data.toZone()}"


@dataclass(frozen=True)
class LocalConfig:
    """`[local]`: `records` from `records` and `records_file`; `hosts_files` are absolute
    and read when the resolver builds its local data (again on SIGHUP)."""

    records: tuple[LocalRecord, ...] = ()
    hosts_files: tuple[str, ...] = ()
    ptr: bool = True
    ttl: int = DEFAULT_TTL
    nodefault: tuple[str, ...] = ()


def build(table: LocalTable, where: Where) -> LocalConfig:
    records = list(parse_records(table.records, table.ttl, where, "local.records"))
    if table.records_file:
        path = where.base / table.records_file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise where.error("local.records_file", f"cannot read {path}: {e.strerror}") from None
        try:
            records += parse_zone(text, table.ttl)
        except ValueError as e:
            raise where.error("local.records_file", f"{path}: {e}") from None
    hosts = tuple(str(where.base / p) for p in table.hosts_files)
    for i, hosts_file in enumerate(hosts):
        try:
            read_hosts(hosts_file, table.ttl)
        except (OSError, ValueError) as e:
            raise where.error(f"local.hosts_files[{i}]", str(e)) from None
    nodefault = where.each("local.nodefault", table.nodefault, _served_zone)
    return LocalConfig(tuple(records), hosts, table.ptr, table.ttl, nodefault)


def _served_zone(text: str) -> str:
    from fdconfig.policies import normalize_domain

    zone = normalize_domain(text)
    if zone not in LOCALLY_SERVED:
        raise ValueError(f'"{text}" is not a locally served zone (like "test" or "local")')
    return zone


def parse_records(
    lines: Sequence[str], ttl: int, where: Where, key: str
) -> tuple[LocalRecord, ...]:
    """The records of zone-file `lines` (one record each); an error names `key[i]`."""
    out: list[LocalRecord] = []
    for i, line in enumerate(lines):
        try:
            found = _records(line, ttl)
        except ValueError as e:
            raise where.error(f"{key}[{i}]", f'"{line}": {e}') from None
        if len(found) != 1:
            raise where.error(f"{key}[{i}]", f'"{line}" is not one record')
        out += found
    _check_cnames(out, where, key)
    return tuple(out)


def parse_zone(text: str, ttl: int) -> list[LocalRecord]:
    """The records of a zone file. Raises ValueError naming the first bad line."""
    try:
        return _records(text, ttl)
    except ValueError:
        pass
    # The parser does not count lines: the shortest failing prefix ends at the bad one.
    lines = text.splitlines()
    low, high = 1, len(lines)
    error = ""
    while low < high:
        mid = (low + high) // 2
        try:
            _records("\n".join(lines[:mid]), ttl)
        except ValueError as e:
            high, error = mid, str(e)
        else:
            low = mid + 1
    if not error:
        try:
            _records(text, ttl)
        except ValueError as e:
            error = str(e)
    shown = lines[low - 1].strip() if lines else ""
    raise ValueError(f'line {low}: "{shown}": {error}')


def _records(text: str, ttl: int) -> list[LocalRecord]:
    from dnslib import RR, DNSBuffer  # type: ignore[import-untyped]

    try:
        parsed = RR.fromZone(text, ttl=ttl)
    except Exception as e:  # dnslib raises whatever its lexer met: one message for all
        raise ValueError(f"not a zone-file record (NAME [TTL] [IN] TYPE DATA): {e}") from None
    out = []
    for rr in parsed:
        name = str(rr.rname).rstrip(".").lower()
        if rr.rtype not in TYPE_NAMES:
            from dnslib import QTYPE  # type: ignore[import-untyped]

            raise ValueError(
                f"{name}: type {QTYPE.get(rr.rtype)} is not served locally ({', '.join(TYPES)})"
            )
        if rr.rclass != 1:
            raise ValueError(f"{name}: only class IN is served")
        buf = DNSBuffer()
        rr.rdata.pack(buf)
        target = ""
        if rr.rtype in (TYPES["CNAME"], TYPES["PTR"]):
            target = str(rr.rdata.label).rstrip(".").lower()
        out.append(LocalRecord(name, rr.rtype, min(rr.ttl, MAX_TTL), bytes(buf.data), target))
    return out


def _check_cnames(records: Iterable[LocalRecord], where: Where, key: str) -> None:
    by_name: dict[str, set[int]] = {}
    for record in records:
        by_name.setdefault(record.name, set()).add(record.rtype)
    for name, types in by_name.items():
        if TYPES["CNAME"] in types and len(types) > 1:
            raise where.error(key, f"{name} has a CNAME and other records (RFC 1034 3.6.2)")


def read_hosts(path: str, ttl: int) -> list[LocalRecord]:
    """A and AAAA records of a hosts file (`ADDRESS NAME [ALIAS...]`, `#` comments).

    Raises:
        OSError: the file cannot be read.
        ValueError: a malformed line, naming the file and the line.
    """
    from fdconfig.policies import normalize_domain

    out: list[LocalRecord] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            if len(words) < 2:
                raise ValueError(f'"{line.strip()}" has an address but no name')
            try:
                address = ipaddress.ip_address(words[0].split("%", 1)[0])
            except ValueError:
                raise ValueError(f'"{words[0]}" is not an IP address') from None
            rtype = TYPES["A"] if address.version == 4 else TYPES["AAAA"]
            for word in words[1:]:
                out.append(LocalRecord(normalize_domain(word), rtype, ttl, address.packed))
        except ValueError as e:
            raise ValueError(f"{path}: line {number}: {e}") from None
    return out

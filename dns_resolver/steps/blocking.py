"""Synthesized answers for blocked names, one wire template per block mode.

Modes (issue 3):
    nxdomain  NXDOMAIN with an SOA in the authority section (so clients cache it, RFC 2308);
    nodata    NOERROR, no answer, SOA in the authority section;
    null      A 0.0.0.0 / AAAA ::, NODATA for every other type;
    ip        the configured address for A/AAAA (a block page), NODATA for the rest.

Every block carries an Extended DNS Error (RFC 8914): 15 Blocked, or 17 Filtered for the
categories a policy chose, with EXTRA-TEXT naming the category, list and rule so `dig`
shows why. Answers are built by concatenating precomputed bytes (no dnslib), the shape a
Cython fast path keeps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from dns_resolver import edns, wire
from filtercore.verdict import Verdict

MODES = ("nxdomain", "nodata", "null", "ip")

SOA_MNAME = "blocked.filterdns.invalid"
SOA_RNAME = "hostmaster.filterdns.invalid"

_EDE_MEMO_LIMIT = 4096


def ede_text(verdict: Verdict, *, via: str | None = None, note: str | None = None) -> str:
    """EXTRA-TEXT for a block, e.g. `blocked: category=adult list=ut1/adult rule=example.com`.

    `via` names what an answer inspection matched (`cname=tracker.example` or
    `address=192.0.2.1`), so a CNAME-cloaked block says which target was listed. `note` is
    appended as is: the policy layer says which policy applied (`policy=child`) and why
    (`schedule=school`, `allowance=games:60min-used-up-until-tomorrow`).
    """
    parts = ["blocked:"]
    if verdict.category:
        parts.append(f"category={verdict.category}")
    if verdict.list:
        parts.append(f"list={verdict.list}")
    # The entry as matched (normalised), not the line re-read from the list file: that
    # read is for explanations (CLI, API, block page) and must stay off the DNS path.
    rule = verdict.matched or verdict.rule
    if rule:
        parts.append(f"rule={rule}")
    if via:
        parts.append(f"via={via}")
    if note:
        parts.append(note)
    return " ".join(parts)


class Blocker:
    """Builds block answers for one configuration.

    Args:
        mode: one of MODES.
        ipv4, ipv6: addresses for `ip` mode ("" means NODATA for that family).
        ttl: TTL of the synthesized records (and the SOA MINIMUM, so negative caching
            lasts as long as a positive block would).
        filtered_categories: categories reported with EDE 17 (Filtered) instead of 15.
    """

    def __init__(
        self,
        mode: str = "nxdomain",
        *,
        ipv4: str = "",
        ipv6: str = "",
        ttl: int = 300,
        filtered_categories: Iterable[str] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown block mode {mode!r} (expected one of {', '.join(MODES)})")
        self.mode = mode
        self.ttl = ttl
        self.filtered = frozenset(filtered_categories)
        if mode == "null":
            ipv4, ipv6 = "0.0.0.0", "::"
        self._a = ipaddress.IPv4Address(ipv4).packed if ipv4 and mode in ("null", "ip") else None
        self._aaaa = (
            ipaddress.IPv6Address(ipv6).packed if ipv6 and mode in ("null", "ip") else None
        )
        soa_rdata = (
            wire.encode_name(SOA_MNAME)
            + wire.encode_name(SOA_RNAME)
            + b"".join(wire.pack_u32(v) for v in (1, 3600, 600, 86400, ttl))
        )
        # The SOA's owner is the question name (a pointer to offset 12).
        self._soa = wire.rr(wire.QNAME_POINTER, wire.TYPE_SOA, ttl, soa_rdata)
        self._a_rr = (
            wire.rr(wire.QNAME_POINTER, wire.TYPE_A, ttl, self._a) if self._a else None
        )
        self._aaaa_rr = (
            wire.rr(wire.QNAME_POINTER, wire.TYPE_AAAA, ttl, self._aaaa) if self._aaaa else None
        )
        self._ede_memo: dict[tuple[int, str | None, str | None], tuple[Verdict, bytes]] = {}

    def body(self, query: wire.Query) -> bytes:
        """The OPT-less block answer to `query` (EDNS is added by `edns.finish`)."""
        record = None
        if self.mode in ("null", "ip") and query.qclass == wire.CLASS_IN:
            if query.qtype == wire.TYPE_A:
                record = self._a_rr
            elif query.qtype == wire.TYPE_AAAA:
                record = self._aaaa_rr
        if record is not None:
            flags = wire.response_flags(query.flags, wire.NOERROR)
            return wire.header(query.id, flags, 1, 1, 0, 0) + query.question + record
        rcode = wire.NXDOMAIN if self.mode == "nxdomain" else wire.NOERROR
        flags = wire.response_flags(query.flags, rcode)
        return wire.header(query.id, flags, 1, 0, 1, 0) + query.question + self._soa

    def ede(self, verdict: Verdict, *, via: str | None = None, note: str | None = None) -> bytes:
        """The encoded EDE option for a block by `verdict` (memoised per verdict)."""
        # Verdicts are shared per rule, so the identity is a good memo key; the verdict is
        # kept in the value so its id cannot be reused while memoised.
        key = (id(verdict), via, note)
        hit = self._ede_memo.get(key)
        if hit is not None and hit[0] is verdict:
            return hit[1]
        code = edns.EDE_FILTERED if verdict.category in self.filtered else edns.EDE_BLOCKED
        option = edns.ede_option(code, ede_text(verdict, via=via, note=note))
        if len(self._ede_memo) >= _EDE_MEMO_LIMIT:
            self._ede_memo.clear()
        self._ede_memo[key] = (verdict, option)
        return option

"""Answer inspection: CNAME cloaking and listed addresses.

A tracker or adult site hidden behind a CNAME in an innocent-looking domain (CNAME
cloaking), or a name resolving to a listed IP, is blocked as if the query name were
listed. Every CNAME/DNAME target and every A/AAAA address in the answer section is checked
with the matcher; the first block decides, and the EDE says what matched.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Protocol

from dns_resolver import wire
from filtercore.errors import InvalidNameError
from filtercore.verdict import Verdict

log = logging.getLogger(__name__)


class Checker(Protocol):
    """What inspection needs of a matcher."""

    def check(self, name: str) -> Verdict: ...

    def check_ip(self, address: str) -> Verdict: ...


def inspect_answer(
    matcher: Checker, response: bytes, records: list[wire.RR] | None = None
) -> tuple[Verdict, str] | None:
    """Return (blocking verdict, what matched) when the answer must be blocked, else None.

    `records` may be passed when the caller already walked the message. What matched is
    given as `cname=NAME` or `address=IP` for the EDE text.
    """
    if records is None:
        records = wire.walk_records(response)
    for record in records:
        if record.section != 1:
            continue
        if record.rtype in (wire.TYPE_CNAME, wire.TYPE_DNAME):
            target, _ = wire.read_name(response, record.rdata_offset)
            if not target:
                continue
            try:
                verdict = matcher.check(target)
            except InvalidNameError:
                # A target our normaliser refuses is nothing a list can name.
                log.debug("uninspectable CNAME target %r", target)
                continue
            if verdict.blocked:
                return verdict, f"cname={target}"
        elif record.rtype == wire.TYPE_A and record.rdlength == 4:
            text = str(ipaddress.IPv4Address(response[record.rdata_offset : record.end]))
            verdict = matcher.check_ip(text)
            if verdict.blocked:
                return verdict, f"address={text}"
        elif record.rtype == wire.TYPE_AAAA and record.rdlength == 16:
            text = str(ipaddress.IPv6Address(response[record.rdata_offset : record.end]))
            verdict = matcher.check_ip(text)
            if verdict.blocked:
                return verdict, f"address={text}"
    return None

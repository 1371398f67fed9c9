"""Unit tests for dns_resolver.steps.inspect: CNAME cloaking and listed answer addresses."""

from __future__ import annotations

import dns.message
import dns.rrset

from dns_resolver.steps.inspect import inspect_answer
from tests.dns_resolver.fakes import FakeMatcher


def response(*records: tuple[str, str, str]) -> bytes:
    query = dns.message.make_query("cloak.example.com", "A")
    msg = dns.message.make_response(query)
    for name, rtype, data in records:
        msg.answer.append(dns.rrset.from_text(name, 60, "IN", rtype, data))
    return msg.to_wire()


MATCHER = FakeMatcher(
    domains={"tracker.example": "tracking", "bad name": "x"},
    ips={"198.51.100.66": "adult", "2001:db8:bad::66": "adult"},
)


def test_clean_answer_passes() -> None:
    data = response(("cloak.example.com.", "CNAME", "www.example.com."),
                    ("www.example.com.", "A", "192.0.2.1"))
    assert inspect_answer(MATCHER, data) is None


def test_listed_cname_target_blocks() -> None:
    data = response(("cloak.example.com.", "CNAME", "x.tracker.example."),
                    ("x.tracker.example.", "A", "192.0.2.1"))
    found = inspect_answer(MATCHER, data)
    assert found is not None
    verdict, via = found
    assert verdict.category == "tracking" and via == "cname=x.tracker.example"


def test_listed_addresses_block() -> None:
    found = inspect_answer(MATCHER, response(("cloak.example.com.", "A", "198.51.100.66")))
    assert found is not None and found[1] == "address=198.51.100.66"
    found = inspect_answer(MATCHER, response(("cloak.example.com.", "AAAA", "2001:db8:bad::66")))
    assert found is not None and found[1] == "address=2001:db8:bad::66"


def test_uninspectable_target_is_skipped() -> None:
    data = response(("cloak.example.com.", "CNAME", r"bad\032name."))
    assert inspect_answer(MATCHER, data) is None

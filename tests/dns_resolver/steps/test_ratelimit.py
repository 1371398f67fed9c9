"""Rate limits per client network (`[ratelimit]`) and RFC 8482 answers to ANY, on real
`filterdns serve` processes with dnsperf, dig and dnspython as clients.

Every test sets `ipv4_prefix = 32`: the clients are 127.0.0.2 and 127.0.0.3, one /24.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype
import pytest

from dns_resolver.fast._ratelimit import RateLimiter
from dns_resolver.steps.ratelimit import LIMITED, LIMITED_LOG, PASS
from tests.dns_resolver.harness import ServerProcess, TestZone, eventually, query

Z = TestZone
FLOODER = "127.0.0.2"
OTHER = "127.0.0.3"


def limits(action: str, qps: float, burst: int, **more: Any) -> dict[str, Any]:
    return {
        "ratelimit": {
            "enabled": True,
            "qps": qps,
            "burst": burst,
            "ipv4_prefix": 32,
            "action": action,
            **more,
        }
    }


# --- the limiter itself ----------------------------------------------------------------------


def test_bucket_burst_then_limited_and_logged_once_a_second() -> None:
    # qps this low adds no token within the test: only the burst passes.
    limiter = RateLimiter(0.001, 3, 24, 56, 1)
    assert [limiter.limit("192.0.2.7")[0] for _ in range(3)] == [PASS] * 3
    first, action = limiter.limit("192.0.2.7")
    again = [limiter.limit("192.0.2.200")[0] for _ in range(5)]  # the same /24
    assert (first, action) in ((LIMITED_LOG, "refused"), (LIMITED, "refused"))
    # At most one LIMITED_LOG per network per second (two if the second turned meanwhile).
    assert [first, *again].count(LIMITED_LOG) <= 2 and LIMITED in again
    assert limiter.limit("192.0.3.1")[0] == PASS  # another /24
    assert limiter.counters() == {"drop": 0, "refused": 6, "truncate": 0}


def test_tcp_has_its_own_bucket_and_is_refused() -> None:
    limiter = RateLimiter(0.001, 1, 24, 56, 2)  # truncate
    assert limiter.limit("2001:db8:1:2::1")[0] == PASS
    assert limiter.limit("2001:db8:1:ff::9")[1] == "truncate"  # same /56
    assert limiter.limit("2001:db8:1:2::1", True)[0] == PASS
    assert limiter.limit("2001:db8:1:2::1", True)[1] == "refused"
    assert limiter.limit("::ffff:192.0.2.1")[0] == PASS  # IPv4 as a mapped address
    assert limiter.limit("192.0.2.1")[1] == "truncate"


def test_exempt_networks_are_never_limited() -> None:
    limiter = RateLimiter(0.001, 1, 24, 56, 0, ["198.51.100.0/24", "2001:db8::/32"])
    assert all(limiter.limit("198.51.100.9")[0] == PASS for _ in range(50))
    assert all(limiter.limit("2001:db8::5")[0] == PASS for _ in range(50))
    assert limiter.limit("203.0.113.1")[0] == PASS
    assert limiter.limit("203.0.113.1")[1] == "drop"


def test_table_is_bounded_and_evicts_the_least_recently_seen() -> None:
    limiter = RateLimiter(0.001, 1, 32, 128, 0, max_networks=64)
    assert limiter.limit("10.0.0.1")[0] == PASS
    assert limiter.limit("10.0.0.1")[0] != PASS
    # 10,000 other networks through a 64-bucket table: 10.0.0.1 is forgotten, and comes
    # back with a full bucket.
    for i in range(10_000):
        limiter.limit(f"10.1.{i >> 8}.{i & 255}")
    assert limiter.limit("10.0.0.1")[0] == PASS


# --- a real server ---------------------------------------------------------------------------


def dnsperf_flood(port: int, tmp_path: Path, seconds: float, rate: int) -> dict[str, int]:
    """dnsperf from FLOODER at `rate` q/s for `seconds`: its sent and completed counts."""
    queries = tmp_path / "flood.txt"
    queries.write_text(f"{Z.WWW} A\n")
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-a", FLOODER, "-d", str(queries),
         "-l", str(seconds), "-Q", str(rate), "-q", "20000", "-t", "1"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    found = {
        key: re.search(rf"Queries {key}:\s+(\d+)", out) for key in ("sent", "completed")
    }
    assert all(found.values()), out
    return {key: int(m.group(1)) for key, m in found.items() if m}


def test_flood_gets_burst_plus_rate_while_another_client_gets_every_answer(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    qps, burst, seconds = 50, 20, 2
    server = filterdns_on_nsd(limits("drop", qps, burst))
    assert server.dig(Z.WWW, "A").status == "NOERROR"  # cached: the flood is answered in C
    before = server.metric("filterdns_queries_total", qtype="A", protocol="udp")
    answers: list[int] = []

    def other_client() -> None:
        # 20 q/s, under its own limit of 50: every query must be answered.
        for _ in range(30):
            started = time.monotonic()
            answers.append(query(server.port, Z.WWW, source=OTHER).rcode())
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))

    thread = threading.Thread(target=other_client)
    thread.start()
    flood = dnsperf_flood(server.port, tmp_path, seconds, 5_000)  # 100 times the limit
    thread.join(30)
    assert answers == [dns.rcode.NOERROR] * 30
    # The flood's answers: the burst, then qps per second. Tolerance: half a second of
    # tokens (dnsperf's start and end are not the bucket's).
    assert burst <= flood["completed"] <= burst + qps * (seconds + 0.5), flood
    assert flood["sent"] > 20 * flood["completed"], flood
    dropped = server.metric("filterdns_ratelimited_total", action="drop")
    assert dropped == flood["sent"] - flood["completed"]
    answered = server.metric("filterdns_queries_total", qtype="A", protocol="udp") - before
    assert answered == flood["completed"] + 30


def ratelimited_lines(log_path: Path) -> list[dict[str, Any]]:
    """The query log's lines for limited queries."""
    text = log_path.read_text() if log_path.exists() else ""
    lines = [json.loads(line) for line in text.splitlines()]
    return [entry for entry in lines if entry["result"] == "ratelimited"]


@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
def test_refused_action_in_c_and_in_the_python_chain(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path, fast_path: bool
) -> None:
    log_path = tmp_path / "queries.jsonl"
    server = filterdns_on_nsd(
        {
            **limits("refused", 0.001, 2),
            "server": {"fast_path": fast_path},
            "querylog": {"enabled": True, "path": str(log_path), "anonymize": "none"},
        }
    )
    statuses = [server.dig(Z.WWW, "A", "-b", FLOODER).status for _ in range(4)]
    assert statuses == ["NOERROR", "NOERROR", "REFUSED", "REFUSED"]
    assert server.dig(Z.WWW, "A", "-b", OTHER).status == "NOERROR"
    assert server.metric("filterdns_ratelimited_total", action="refused") == 2
    # Two limited queries: one line, or two when a second passed between them.
    assert eventually(lambda: len(ratelimited_lines(log_path)) >= 1)
    lines = ratelimited_lines(log_path)
    assert 1 <= len(lines) <= 2
    assert {(e["client"], e["protocol"]) for e in lines} == {(FLOODER, "udp")}


def test_drop_in_the_python_chain_and_tcp_refused(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd({**limits("drop", 0.001, 1), "server": {"fast_path": False}})
    assert server.dig(Z.WWW, "A", "-b", FLOODER).status == "NOERROR"
    assert server.dig(Z.WWW, "A", "-b", FLOODER, "+time=1").status is None  # no answer
    assert server.dig(Z.WWW, "A", "-b", FLOODER, "+tcp").status == "NOERROR"
    assert server.dig(Z.WWW, "A", "-b", FLOODER, "+tcp").status == "REFUSED"
    assert server.metric("filterdns_ratelimited_total", action="drop") == 1
    assert server.metric("filterdns_ratelimited_total", action="refused") == 1


def test_truncate_then_the_tcp_retry_succeeds(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd(limits("truncate", 0.001, 1))
    assert server.dig(Z.WWW, "A", "-b", FLOODER).status == "NOERROR"
    truncated = server.dig(Z.WWW, "A", "-b", FLOODER, "+ignore")
    assert "tc" in truncated.flags and truncated.answer == []
    # Without +ignore dig retries over TCP, which has its own bucket: the answer comes.
    retried = server.dig(Z.WWW, "A", "-b", FLOODER)
    assert retried.status == "NOERROR" and "tc" not in retried.flags
    assert retried.rdata("A") == [Z.WWW_A]
    # TCP over its limit: refused, never truncated.
    assert server.dig(Z.WWW, "A", "-b", FLOODER, "+tcp").status == "REFUSED"
    assert server.metric("filterdns_ratelimited_total", action="truncate") == 2
    assert server.metric("filterdns_ratelimited_total", action="refused") == 1


def test_exempt_network_is_not_limited(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd(limits("refused", 0.001, 1, exempt=[f"{FLOODER}/32"]))
    assert [server.dig(Z.WWW, "A", "-b", FLOODER).status for _ in range(5)] == ["NOERROR"] * 5
    assert server.dig(Z.WWW, "A", "-b", OTHER).status == "NOERROR"
    assert server.dig(Z.WWW, "A", "-b", OTHER).status == "REFUSED"
    assert server.metric("filterdns_ratelimited_total", action="refused") == 1


def test_query_log_has_one_line_per_limited_client_per_second(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    log_path = tmp_path / "queries.jsonl"
    server = filterdns_on_nsd(
        {**limits("drop", 10, 5), "querylog": {"enabled": True, "path": str(log_path)}}
    )
    flood = dnsperf_flood(server.port, tmp_path, 2, 2_000)
    dropped = flood["sent"] - flood["completed"]
    assert dropped > 1000, flood

    assert eventually(lambda: len(ratelimited_lines(log_path)) >= 2)
    lines = ratelimited_lines(log_path)
    seconds = [entry["timestamp"][:19] for entry in lines]
    assert len(seconds) == len(set(seconds)) <= 4  # one a second over a ~2 s flood
    assert {entry["client"] for entry in lines} == {"127.0.0.0"}  # anonymised: its /24
    assert {entry["qname"] for entry in lines} == {Z.WWW.rstrip(".")}


def test_any_is_answered_with_one_hinfo(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd()
    for opts in ((), ("+tcp",), ("+noedns",)):
        answer = server.dig(Z.WWW, "ANY", *opts)
        assert answer.status == "NOERROR", opts
        assert [(r.rtype, r.data) for r in answer.answer] == [("HINFO", '"RFC8482" ""')], opts
    reply = query(server.port, Z.MX, "ANY")
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.HINFO]
    # A blocked name's ANY reveals nothing either: no address, no upstream answer.
    blocked = server.dig(Z.BLOCKED, "ANY")
    assert [r.rtype for r in blocked.answer] == ["HINFO"]
    assert server.metric("filterdns_queries_total", qtype="ANY", result="allowed") == 5
    assert server.metric("filterdns_upstream_queries_total") == 0

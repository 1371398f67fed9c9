"""Integration: caching through a real `filterdns serve` with NSD upstream: TTLs counted
down, negative caching, serve-stale with the upstream stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.dns_resolver.harness import NsdServer, ServerProcess, TestZone

Z = TestZone


def test_ttl_decrements_and_expiry(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd({"upstream": {"timeout": 0.5}})
    first = server.dig(Z.WWW, "A")
    assert first.answer[0].ttl == Z.TTL
    short = server.dig(Z.SHORT, "A")
    assert short.answer[0].ttl == Z.SHORT_TTL
    time.sleep(1.1)
    again = server.dig(Z.WWW, "A")
    assert again.rdata("A") == [Z.WWW_A]
    assert Z.TTL - 2 <= again.answer[0].ttl <= Z.TTL - 1
    assert server.dig(Z.SHORT, "A").answer[0].ttl <= Z.SHORT_TTL - 1
    hits = server.metric("filterdns_cache_hits_total")
    assert hits == 2
    time.sleep(1.0)
    # SHORT expired: fetched again, with its full TTL.
    assert server.dig(Z.SHORT, "A").answer[0].ttl == Z.SHORT_TTL
    assert server.metric("filterdns_cache_hits_total") == 2


def test_negative_caching(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd({"upstream": {"timeout": 0.5}, "cache": {"negative_max_ttl": 30}})
    first = server.dig(Z.NXDOMAIN, "A")
    assert first.status == "NXDOMAIN"
    assert first.authority[0].rtype == "SOA" and first.authority[0].ttl == 30  # capped
    nodata = server.dig(Z.NODATA, "MX")
    assert nodata.status == "NOERROR" and not nodata.answer
    time.sleep(1.1)
    second = server.dig(Z.NXDOMAIN, "A")
    assert second.status == "NXDOMAIN" and second.authority[0].ttl <= 29
    assert server.dig(Z.NODATA, "MX").authority[0].ttl <= 29
    assert server.metric("filterdns_cache_hits_total") == 2
    assert server.metric("filterdns_queries_total", result="cached") == 2


def test_serve_stale_when_upstream_is_down(
    start_filterdns: Callable[..., ServerProcess], fresh_nsd: NsdServer, tmp_path: Path
) -> None:
    server = start_filterdns(
        {"upstream": {"timeout": 0.3, "max_failures": 100},
         "cache": {"serve_stale": True, "stale_answer_ttl": 7}},
        upstreams=[fresh_nsd.upstream],
    )
    assert server.dig(Z.SHORT, "A").rdata("A") == [Z.SHORT_A]
    fresh_nsd.stop()
    time.sleep(Z.SHORT_TTL + 0.2)
    stale = server.dig(Z.SHORT, "A")
    assert stale.status == "NOERROR" and stale.rdata("A") == [Z.SHORT_A]
    assert stale.answer[0].ttl == 7
    assert stale.ede and stale.ede[0][0] == 3  # Stale Answer
    never_seen = server.dig(Z.WWW, "A")
    assert never_seen.status == "SERVFAIL"
    fresh_nsd.start()
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]


def test_without_serve_stale_an_expired_name_fails(
    start_filterdns: Callable[..., ServerProcess], fresh_nsd: NsdServer
) -> None:
    server = start_filterdns({"upstream": {"timeout": 0.3}}, upstreams=[fresh_nsd.upstream])
    assert server.dig(Z.SHORT, "A").rdata("A") == [Z.SHORT_A]
    fresh_nsd.stop()
    time.sleep(Z.SHORT_TTL + 0.2)
    assert server.dig(Z.SHORT, "A").status == "SERVFAIL"

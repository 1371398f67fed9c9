"""Integration: upstream failover, anti-spoofing and TCP fallback through a real
`filterdns serve`, with NSD and the fault-injecting upstream."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.dns_resolver.harness import (
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    free_port,
)

Z = TestZone


def test_failover_past_a_dead_first_upstream(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    server = start_filterdns(
        {"upstream": {"timeout": 0.5, "max_failures": 2, "retry_dead_after": 60}},
        upstreams=[dead, nsd_upstream.upstream],
    )
    started = time.monotonic()
    for name in ("a", "b", "c"):
        r = server.dig(f"{name}.{Z.NAME}", "A")
        assert r.status == "NXDOMAIN"
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]
    assert time.monotonic() - started < 3
    assert server.metric("filterdns_upstream_errors_total", upstream=dead) == 2
    assert server.metric("filterdns_upstream_healthy", upstream=dead) == 0


def test_spoofed_answers_are_discarded_and_failover_follows(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    spoofer = make_fault_upstream(mode="wrong_id")
    good = make_fault_upstream(answer_ip="192.0.2.200")
    server = start_filterdns(
        {"upstream": {"timeout": 0.3, "max_failures": 50}},
        upstreams=[spoofer.upstream, good.upstream],
    )
    r = server.dig("x.example", "A")
    assert r.rdata("A") == ["192.0.2.200"]
    for mode in ("wrong_question", "wrong_source", "garbage", "servfail", "refused", "timeout"):
        spoofer.mode = mode
        r = server.dig(f"{mode.replace('_', '-')}.example", "A")
        assert r.rdata("A") == ["192.0.2.200"], mode
    metric = server.metric
    # wrong_id and wrong_question are seen and discarded; a wrong source never reaches us
    # (the upstream socket is connected, so the kernel drops it). Each of those, garbage and
    # silence then ends in a timeout.
    errors = "filterdns_upstream_errors_total"
    assert metric(errors, upstream=spoofer.upstream, kind="spoofed") == 2
    assert metric(errors, upstream=spoofer.upstream, kind="timeout") == 5
    assert metric(errors, upstream=spoofer.upstream, kind="garbage") >= 1
    assert metric(errors, upstream=spoofer.upstream, kind="refused") == 1
    assert metric(errors, upstream=spoofer.upstream, kind="servfail") == 1
    assert metric(errors, upstream=good.upstream) == 0
    assert good.count == 7


def test_spoofer_alone_gives_servfail(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    spoofer = make_fault_upstream(mode="wrong_id")
    server = start_filterdns({"upstream": {"timeout": 0.3}}, upstreams=[spoofer.upstream])
    r = server.dig("x.example", "A")
    assert r.status == "SERVFAIL" and not r.answer
    assert r.ede and r.ede[0][0] == 22


def test_upstream_truncation_retried_over_tcp(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    up = make_fault_upstream(mode="truncate")
    server = start_filterdns({"upstream": {"timeout": 0.5}}, upstreams=[up.upstream])
    assert server.dig("t.example", "A").rdata("A") == ["192.0.2.53"]
    assert up.count_of("udp") == 1 and up.count_of("tcp") == 1


def test_parallel_strategy(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    slow = make_fault_upstream(delay=1.0, answer_ip="192.0.2.1")
    fast = make_fault_upstream(answer_ip="192.0.2.2")
    server = start_filterdns(
        {"upstream": {"timeout": 2.0, "strategy": "parallel"}},
        upstreams=[slow.upstream, fast.upstream],
    )
    started = time.monotonic()
    assert server.dig("p.example", "A").rdata("A") == ["192.0.2.2"]
    assert time.monotonic() - started < 0.9

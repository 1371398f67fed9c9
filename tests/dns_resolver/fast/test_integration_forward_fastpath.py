"""`[[forward]]` rules served by the C fast path, end to end: `filterdns serve` queried with
dig, NSD instances as the rules' servers. A rule's names are forwarded from C on its own
upstream set's sockets and their second ask is a C cache hit (no hand-over to the Python
chain: `filterdns_fastpath_fallbacks_total` stays where it was), per policy, with
failover between a rule's servers, for a private reverse zone, and across a reload that
changes the rule. The same over DoT is in test_integration_encrypted_upstreams.py."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dns_resolver.harness import (
    FaultUpstream,
    NsdServer,
    ServerProcess,
    eventually,
    to_toml,
)
from tests.dns_resolver.steps.test_integration_local import (
    CORP_ZONE,
    DC_A,
    PUPIL,
    ROUTER_PTR,
    ROUTER_ZONE,
    STAFF,
    asked,
    reverse,
)

DC_B = "10.20.0.6"  # the domain controller's address in the second NSD's corp.test


def corp_nsd(workdir: Path, dc: str = DC_A) -> NsdServer:
    zones = {
        "corp.test.": CORP_ZONE.replace(DC_A, dc),
        "168.192.in-addr.arpa.": ROUTER_ZONE,
    }
    server = NsdServer(workdir, extra_zones=zones)
    server.start()
    return server


@pytest.fixture
def make_corp_nsd(tmp_path: Path) -> Iterator[Callable[..., NsdServer]]:
    """NSD instances serving `corp.test` (the domain controller at `dc`) and the router's
    reverse zone; each test's own, free to stop."""
    started: list[NsdServer] = []

    def make(dc: str = DC_A) -> NsdServer:
        server = corp_nsd(tmp_path / f"corp-{len(started)}", dc)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def handed_to_python(server: ServerProcess) -> float:
    """UDP queries the fast path handed to the Python chain, for any reason but the start-up
    probe's (`odd`)."""
    return server.metric("filterdns_fastpath_fallbacks_total") - server.metric(
        "filterdns_fastpath_fallbacks_total", reason="odd"
    )


def c_answers(server: ServerProcess) -> float:
    return server.metric("filterdns_fastpath_answers_total")


def test_a_rule_name_is_forwarded_by_c_and_its_second_ask_is_a_c_cache_hit(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_corp_nsd: Callable[..., NsdServer],
) -> None:
    corp = make_corp_nsd()
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "local": {"nodefault": []},  # `test` is served locally, as by default
            "forward": [{"domains": ["corp.test"], "servers": [corp.upstream]}],
        }
    )
    for _ in range(2):
        answer = server.dig("dc.corp.test", "A")
        assert answer.status == "NOERROR" and answer.rdata("A") == [DC_A]
    assert handed_to_python(server) == 0
    assert c_answers(server) == 2
    # C asked the rule's server once (counted under its name) and the cache did the rest.
    assert server.metric("filterdns_upstream_queries_total", upstream=corp.upstream) == 1
    assert server.metric("filterdns_cache_hits_total") == 1
    assert asked(fault_upstream, "corp.test") == []
    # The default set still gets everything else, from C too.
    assert server.dig("www.example.org", "A").rdata("A") == [fault_upstream.answer_ip]
    assert server.metric("filterdns_upstream_queries_total", upstream=fault_upstream.upstream) == 1
    assert handed_to_python(server) == 0
    # A locally served zone the rule does not cover is Python's NXDOMAIN, never forwarded.
    assert server.dig("printer.test", "A").status == "NXDOMAIN"
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="policy") == 1
    assert asked(fault_upstream, "test") == []


def test_a_policy_scoped_rule_is_forwarded_by_c_for_its_policy_only(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_corp_nsd: Callable[..., NsdServer],
) -> None:
    corp = make_corp_nsd()
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "local": {"nodefault": []},
            "forward": [
                {"domains": ["corp.test"], "servers": [corp.upstream], "policies": ["staff"]}
            ],
            "policies": {
                "staff": {"clients": [f"{STAFF}/32"]},
                "pupils": {"clients": [f"{PUPIL}/32"]},
            },
        }
    )
    for _ in range(2):
        assert server.dig("dc.corp.test", "A", "-b", STAFF).rdata("A") == [DC_A]
    assert handed_to_python(server) == 0
    assert c_answers(server) == 2
    assert server.metric("filterdns_upstream_queries_total", upstream=corp.upstream) == 1
    # The pupils' policy has no rule: `test` is served locally for them, by Python.
    pupil = server.dig("dc.corp.test", "A", "-b", PUPIL)
    assert pupil.status == "NXDOMAIN" and "aa" in pupil.flags
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="policy") == 1
    assert server.metric("filterdns_upstream_queries_total", upstream=corp.upstream) == 1


def test_a_policy_with_its_own_default_set_is_forwarded_by_c(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    staff_upstream = make_fault_upstream(answer_ip="192.0.2.77")
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "forward": [
                {"domains": ["."], "servers": [staff_upstream.upstream], "policies": ["staff"]}
            ],
            "policies": {"staff": {"clients": [f"{STAFF}/32"]}},
        }
    )
    assert server.dig("www.example.org", "A", "-b", STAFF).rdata("A") == ["192.0.2.77"]
    assert server.dig("www.example.org", "A", "-b", PUPIL).rdata("A") == [
        fault_upstream.answer_ip
    ]
    assert handed_to_python(server) == 0
    assert c_answers(server) == 2
    assert len(asked(staff_upstream, "example.org")) == 1
    assert len(asked(fault_upstream, "example.org")) == 1


def test_a_rule_fails_over_between_its_servers_from_c(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_corp_nsd: Callable[..., NsdServer],
) -> None:
    first, second = make_corp_nsd(), make_corp_nsd()
    server = start_filterdns(
        {
            "upstream": {
                "servers": [fault_upstream.upstream],
                "max_failures": 2,
                "retry_dead_after": 60,
            },
            "forward": [{"domains": ["corp.test"], "servers": [first.upstream, second.upstream]}],
            "cache": {"enabled": False},
        }
    )
    for i in range(3):
        assert server.dig(f"before-{i}.corp.test", "A").status == "NXDOMAIN"
    assert server.metric("filterdns_upstream_queries_total", upstream=first.upstream) == 3
    assert handed_to_python(server) == 0
    first.stop()  # its port is closed: C hears of it at once (ECONNREFUSED)
    for i in range(5):
        assert server.dig(f"after-{i}.corp.test", "A").status == "NXDOMAIN"
    # Two failures mark it dead; C moved to the second server, which answered all five.
    assert server.metric("filterdns_upstream_healthy", upstream=first.upstream) == 0
    assert server.metric("filterdns_upstream_healthy", upstream=second.upstream) == 1
    assert server.metric("filterdns_upstream_errors_total", upstream=first.upstream) == 2
    assert server.metric("filterdns_upstream_queries_total", upstream=second.upstream) == 5
    # The two that failed went on in Python (the rule's Forwarder); the rest stayed in C.
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="upstream") == 2
    assert handed_to_python(server) == 2
    assert asked(fault_upstream, "corp.test") == []


def test_a_rule_for_a_private_reverse_zone_is_forwarded_by_c(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_corp_nsd: Callable[..., NsdServer],
) -> None:
    router = make_corp_nsd()
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "forward": [{"domains": ["168.192.in-addr.arpa"], "servers": [router.upstream]}],
        }
    )
    for _ in range(2):
        answer = server.dig(reverse("192.168.1.1"), "PTR")
        assert answer.status == "NOERROR" and answer.rdata("PTR") == [ROUTER_PTR]
    assert handed_to_python(server) == 0
    assert server.metric("filterdns_upstream_queries_total", upstream=router.upstream) == 1
    # Other private reverse zones are still answered locally (Python), never forwarded.
    local = server.dig(reverse("10.1.2.3"), "PTR")
    assert local.status == "NXDOMAIN" and "aa" in local.flags
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="policy") == 1
    assert asked(fault_upstream, "in-addr.arpa") == []


def test_a_reload_that_changes_a_rule_moves_its_names_to_the_new_servers(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_corp_nsd: Callable[..., NsdServer],
) -> None:
    old, new = make_corp_nsd(), make_corp_nsd(dc=DC_B)
    config = {
        "upstream": {"servers": [fault_upstream.upstream]},
        "forward": [{"domains": ["corp.test"], "servers": [old.upstream]}],
    }
    server = start_filterdns(config)
    assert server.dig("dc.corp.test", "A").rdata("A") == [DC_A]
    written = dict(server.config)
    written["forward"] = [{"domains": ["corp.test"], "servers": [new.upstream]}]
    server.config_path.write_text(to_toml(written), encoding="utf-8")
    server.send_signal(signal.SIGHUP)
    # The reload empties the cache: the next ask goes to the new rule's server.
    assert eventually(lambda: server.dig("dc.corp.test", "A").rdata("A") == [DC_B])
    assert server.dig("dc.corp.test", "A").rdata("A") == [DC_B]  # from C's cache
    assert server.metric("filterdns_upstream_queries_total", upstream=new.upstream) == 1
    assert server.metric("filterdns_upstream_queries_total", upstream=old.upstream) == 1
    assert handed_to_python(server) == 0


def test_local_records_under_a_rule_stay_local_and_the_rest_goes_to_its_servers(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    make_corp_nsd: Callable[..., NsdServer],
) -> None:
    corp = make_corp_nsd()
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "local": {"records": ["printer.corp.test A 192.168.1.9"]},
            "forward": [{"domains": ["corp.test"], "servers": [corp.upstream]}],
        }
    )
    printer = server.dig("printer.corp.test", "A")
    assert printer.rdata("A") == ["192.168.1.9"] and "aa" in printer.flags
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="policy") == 1
    assert server.dig("dc.corp.test", "A").rdata("A") == [DC_A]
    assert handed_to_python(server) == 1  # the local record only
    assert server.metric("filterdns_upstream_queries_total", upstream=corp.upstream) == 1

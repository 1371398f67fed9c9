"""Local names and forwarding rules end to end: `filterdns serve` (fast path on) queried
with dig, a second NSD serving `corp.test` and a router's reverse zone behind `[[forward]]`
rules, a recording upstream that must never see what is answered locally, local records
from the config, a records file and a hosts file (re-read on SIGHUP), and per-policy
records and rewrites told apart by the client's source address."""

from __future__ import annotations

import ipaddress
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dns_resolver.harness import (
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    eventually,
)

STAFF, PUPIL, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.1"
DC_A = "10.20.0.5"
ROUTER_PTR = "router.corp.test."

CORP_ZONE = f"""$ORIGIN corp.test.
$TTL 300
@   IN SOA ns1 hostmaster 1 3600 600 86400 60
@   IN NS  ns1
ns1 IN A   127.0.0.1
dc  IN A   {DC_A}
"""
ROUTER_ZONE = f"""$ORIGIN 168.192.in-addr.arpa.
$TTL 300
@     IN SOA ns1.corp.test. hostmaster.corp.test. 1 3600 600 86400 60
@     IN NS  ns1.corp.test.
1.1   IN PTR {ROUTER_PTR}
"""


@pytest.fixture(scope="module")
def corp_nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    """A second NSD: the school's domain controller (`corp.test`) and the home router's
    reverse zone (`168.192.in-addr.arpa`)."""
    server = NsdServer(
        tmp_path_factory.mktemp("corp-nsd"),
        extra_zones={"corp.test.": CORP_ZONE, "168.192.in-addr.arpa.": ROUTER_ZONE},
    )
    server.start()
    yield server
    server.stop()


def reverse(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def asked(upstream: FaultUpstream, suffix: str) -> list[str]:
    """The names `upstream` was asked that end in `suffix`."""
    names = [str(q.qname or "").lower() for q in upstream.received]
    return [n for n in names if n.rstrip(".").endswith(suffix)]


def test_a_forward_rule_answers_for_the_policy_it_names(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    corp_nsd: NsdServer,
) -> None:
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "local": {"nodefault": []},  # `test` is served locally, as by default
            "forward": [
                {"domains": ["corp.test"], "servers": [corp_nsd.upstream], "policies": ["staff"]}
            ],
            "policies": {
                "staff": {"clients": [f"{STAFF}/32"]},
                "pupils": {"clients": [f"{PUPIL}/32"]},
            },
        }
    )
    for _ in range(2):  # the second time from the cache (C's: C forwards the rule too)
        staff = server.dig("dc.corp.test", "A", "-b", STAFF)
        assert staff.status == "NOERROR" and staff.rdata("A") == [DC_A]
    over_tcp = server.kdig("dc.corp.test", "A", "+tcp", "-b", STAFF)
    assert over_tcp.rdata("A") == [DC_A]
    # The rule's servers have the upstreams' metrics and health.
    assert server.metric("filterdns_upstream_queries_total", upstream=corp_nsd.upstream) == 1
    assert server.metric("filterdns_upstream_healthy", upstream=corp_nsd.upstream) == 1
    for client in (PUPIL, OTHER):
        other = server.dig("dc.corp.test", "A", "-b", client)
        assert other.status == "NXDOMAIN"
        assert "aa" in other.flags
        assert [(r.name, r.rtype) for r in other.authority] == [("test.", "SOA")]
    # Everything else still goes to the default upstream set, for every policy.
    assert server.dig("www.example.org", "A", "-b", STAFF).rdata("A") == [
        fault_upstream.answer_ip
    ]
    assert asked(fault_upstream, "example.org")
    assert asked(fault_upstream, "test") == []


def test_private_reverse_lookups_stay_local_unless_a_rule_names_the_router(
    start_filterdns: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    corp_nsd: NsdServer,
) -> None:
    server = start_filterdns(
        {
            "upstream": {"servers": [fault_upstream.upstream]},
            "forward": [{"domains": ["168.192.in-addr.arpa"], "servers": [corp_nsd.upstream]}],
        }
    )
    for address, zone in (
        ("10.1.2.3", "10.in-addr.arpa."),
        ("172.20.0.1", "20.172.in-addr.arpa."),
        ("100.64.0.1", "64.100.in-addr.arpa."),
        ("169.254.1.1", "254.169.in-addr.arpa."),
        ("fd00::1", "d.f.ip6.arpa."),
        ("fe80::1", "8.e.f.ip6.arpa."),
    ):
        answer = server.dig(reverse(address), "PTR")
        assert answer.status == "NXDOMAIN", address
        assert "aa" in answer.flags
        assert [(r.name, r.rtype) for r in answer.authority] == [(zone, "SOA")]
    router = server.dig(reverse("192.168.1.1"), "PTR")
    assert router.status == "NOERROR" and router.rdata("PTR") == [ROUTER_PTR]
    # A public address's reverse lookup is forwarded as usual.
    server.dig(reverse("8.8.8.8"), "PTR")
    assert asked(fault_upstream, "8.8.8.in-addr.arpa")
    assert asked(fault_upstream, "ip6.arpa") == []
    assert [n for n in asked(fault_upstream, "in-addr.arpa") if "8.8.8" not in n] == []


@pytest.fixture
def local_server(
    tmp_path: Path,
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> ServerProcess:
    (tmp_path / "hosts").write_text(
        "# the home network\n192.168.1.20 nas.home nas\nfd00::20 nas6.home\n"
    )
    (tmp_path / "lan.zone").write_text(
        "$ORIGIN lan.\n$TTL 120\nmail IN A 192.168.1.25\n@ IN MX 10 mail\n"
        "_sip._tcp IN SRV 0 5 5060 printer.lan.\n"
    )
    return filterdns_on_nsd(
        {
            "local": {
                "ttl": 600,
                "records": [
                    "printer.lan 300 IN A 192.168.1.9",
                    "printer.lan AAAA fd00::9",
                    "nas.lan CNAME printer.lan",
                    'info.lan TXT "ask the office"',
                    f"web.lan CNAME {TestZone.WWW}",
                    f"bad.lan CNAME {TestZone.BLOCKED}",
                ],
                "records_file": "lan.zone",
                "hosts_files": ["hosts"],
            },
            "querylog": {"enabled": True, "path": "queries.jsonl"},
            "policies": {
                "staff": {
                    "clients": [f"{STAFF}/32"],
                    "records": ["printer.lan A 10.0.0.9"],
                    "rewrite": {"school.lan": TestZone.NAME},
                },
            },
        }
    )


def test_local_records_and_a_hosts_file(local_server: ServerProcess, tmp_path: Path) -> None:
    server = local_server
    printer = server.dig("printer.lan", "A")
    assert printer.rdata("A") == ["192.168.1.9"] and "aa" in printer.flags
    assert printer.answer[0].ttl == 300
    assert server.dig("printer.lan", "AAAA").rdata("AAAA") == ["fd00::9"]
    nas = server.dig("nas.lan", "A")
    assert [(r.rtype, r.data) for r in nas.answer] == [
        ("CNAME", "printer.lan."),
        ("A", "192.168.1.9"),
    ]
    info = server.dig("info.lan", "TXT")
    assert info.rdata("TXT") == ['"ask the office"'] and info.answer[0].ttl == 600
    nodata = server.dig("printer.lan", "MX")
    assert nodata.status == "NOERROR" and nodata.answer == [] and "aa" in nodata.flags
    # The records file, with its own $TTL.
    assert server.dig("lan", "MX").rdata("MX") == ["10 mail.lan."]
    assert server.dig("mail.lan", "A").answer[0].ttl == 120
    assert server.dig("_sip._tcp.lan", "SRV").rdata("SRV") == ["0 5 5060 printer.lan."]
    # The hosts file: names, aliases, IPv6, the configured TTL.
    nas_home = server.dig("nas.home", "A")
    assert nas_home.rdata("A") == ["192.168.1.20"] and nas_home.answer[0].ttl == 600
    assert server.dig("nas", "A").rdata("A") == ["192.168.1.20"]
    assert server.dig("nas6.home", "AAAA").rdata("AAAA") == ["fd00::20"]
    # PTRs made from the A and AAAA records: the first name of an address.
    assert server.dig(reverse("192.168.1.9"), "PTR").rdata("PTR") == ["printer.lan."]
    assert server.dig(reverse("192.168.1.20"), "PTR").rdata("PTR") == ["nas.home."]
    assert server.dig(reverse("fd00::20"), "PTR").rdata("PTR") == ["nas6.home."]
    unknown = server.dig(reverse("192.168.1.99"), "PTR")
    assert unknown.status == "NXDOMAIN" and "aa" in unknown.flags

    # SIGHUP reads the hosts file again.
    (tmp_path / "hosts").write_text("192.168.1.21 nas.home\n")
    server.send_signal(signal.SIGHUP)
    assert eventually(lambda: server.dig("nas.home", "A").rdata("A") == ["192.168.1.21"])
    assert server.dig("nas6.home", "AAAA").rdata("AAAA") == []  # no longer local
    # A hosts file that went bad makes the reload rejected (the configuration is read
    # again and the hosts files with it): the previous local data stays.
    (tmp_path / "hosts").write_text("192.168.1.300 nas.home\n")
    server.send_signal(signal.SIGHUP)
    rejected = (
        "config reload rejected, keeping the running configuration: "
        f"{server.config_path}: local.hosts_files[0]: {tmp_path / 'hosts'}: line 1: "
        '"192.168.1.300" is not an IP address'
    )
    assert eventually(lambda: rejected in server.stderr_text()), server.stderr_text()
    assert server.metric("filterdns_config_reloads_total", result="rejected") == 1
    assert server.dig("nas.home", "A").rdata("A") == ["192.168.1.21"]
    server.stop()
    results = {
        e["qname"]: e["result"]
        for e in map(json.loads, (tmp_path / "queries.jsonl").read_text().splitlines())
    }
    assert results["printer.lan"] == "local" and results["9.1.168.192.in-addr.arpa"] == "local"


def test_local_cnames_are_filtered_and_followed_upstream(local_server: ServerProcess) -> None:
    server = local_server
    web = server.dig("web.lan", "A")
    assert [(r.rtype, r.data) for r in web.answer] == [
        ("CNAME", TestZone.WWW),
        ("A", TestZone.WWW_A),
    ]
    bad = server.dig("bad.lan", "A")
    assert bad.status == "NXDOMAIN" and bad.answer == []
    assert f"cname={TestZone.BLOCKED.rstrip('.')}" in bad.ede_text
    assert server.metric("filterdns_queries_total", result="local") >= 1


def test_per_policy_records_and_rewrites_differ_by_client(local_server: ServerProcess) -> None:
    server = local_server
    assert server.dig("printer.lan", "A", "-b", STAFF).rdata("A") == ["10.0.0.9"]
    assert server.dig("printer.lan", "A", "-b", OTHER).rdata("A") == ["192.168.1.9"]
    # The other names keep the [local] records for staff too.
    assert server.dig("info.lan", "TXT", "-b", STAFF).rdata("TXT") == ['"ask the office"']
    for _ in range(2):  # the second answer from the cache, under staff's key
        rewritten = server.dig("www.school.lan", "A", "-b", STAFF)
        assert [(r.name, r.data) for r in rewritten.answer] == [
            ("www.school.lan.", TestZone.WWW_A)
        ]
    other = server.dig("www.school.lan", "A", "-b", OTHER)
    assert other.rdata("A") == []


def test_a_root_rule_gives_a_policy_its_own_default_upstream_set(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    usual = make_fault_upstream(answer_ip="192.0.2.10")
    family = make_fault_upstream(answer_ip="192.0.2.20")
    server = start_filterdns(
        {
            "upstream": {"servers": [usual.upstream]},
            "forward": [{"domains": ["."], "servers": [family.upstream], "policies": ["kids"]}],
            "policies": {"kids": {"clients": [f"{PUPIL}/32"]}},
        }
    )
    for _ in range(2):  # and again from each policy's cache entry
        assert server.dig("www.example.org", "A", "-b", PUPIL).rdata("A") == ["192.0.2.20"]
        assert server.dig("www.example.org", "A", "-b", OTHER).rdata("A") == ["192.0.2.10"]
    assert len(asked(family, "example.org")) == 1 and len(asked(usual, "example.org")) == 1

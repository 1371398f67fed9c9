"""The ClientID core: its place in the policy precedence, its binding to networks, the cache
key that carries the policy and never the ClientID, and the transport reaching the
metrics and the query log."""

from __future__ import annotations

import json
from pathlib import Path

import dns.message
import pytest
from prometheus_client import generate_latest

from dns_resolver.observability.metrics import Metrics
from dns_resolver.observability.querylog import QueryLog
from dns_resolver.resolver import TRANSPORTS, Pending, Resolver
from dns_resolver.steps.policy import OPTION_MAC
from dns_resolver.wire import Edns
from tests.dns_resolver.policy_helpers import Clock, make_config, make_resolver, paris
from tests.dns_resolver.steps.test_policy import answer, ecs_option

POLICIES = """
[clients]
trusted_forwarders = ["127.0.0.53/32"]

[policies.child]
client_ids = ["k7f3q9x2", "tablet-2"]
block = ["adult", "games"]

[policies.school]
client_ids = ["s9x"]
client_id_networks = ["10.20.0.0/16", "2001:db8::/32"]
block = ["games"]

[policies.teen]
clients = ["127.0.0.0/24"]
macs = ["02:00:00:00:00:01"]
block = ["adult"]

[policies.default]
block = ["malware-phishing"]
"""


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    return make_resolver(make_config(tmp_path, POLICIES), Clock(paris(23, 12)))


def query(name: str, qtype: str = "A", **kw: object) -> bytes:
    kw.setdefault("use_edns", 0)
    return dns.message.make_query(name, qtype, **kw).to_wire()  # type: ignore[arg-type]


def test_the_client_id_comes_first(resolver: Resolver) -> None:
    table = resolver.policies
    assert table is not None
    by_id = table.select("127.0.0.9", None, "k7f3q9x2")
    assert (by_id.policy.name, by_id.via, by_id.client) == ("child", "clientid", "id:k7f3q9x2")
    assert table.select("127.0.0.9", None, "tablet-2").policy.name == "child"
    # Before a trusted forwarder's MAC option and ECS, and before the address.
    opt = Edns(1232, options=(ecs_option("127.0.0.0/24"), (OPTION_MAC, b"02:00:00:00:00:01")))
    assert table.select("127.0.0.53", opt).policy.name == "teen"
    assert table.select("127.0.0.53", opt, "k7f3q9x2").policy.name == "child"


@pytest.mark.parametrize(
    ("client", "client_id", "policy"),
    [
        ("127.0.0.9", "unknown-id", "teen"),  # an unknown ClientID: what the address gets
        ("192.168.9.9", "unknown-id", "default"),
        ("192.168.9.9", None, "default"),
        ("192.168.9.9", "", "default"),
        ("10.20.3.4", "s9x", "school"),  # inside client_id_networks
        ("2001:db8::7", "s9x", "school"),
        ("127.0.0.9", "s9x", "teen"),  # outside them: ignored, the address decides
        ("192.168.9.9", "s9x", "default"),
        ("not-an-address", "s9x", "default"),
    ],
)
def test_unknown_or_unbound_client_ids_are_ignored(
    resolver: Resolver, client: str, client_id: str | None, policy: str
) -> None:
    assert resolver.policies is not None
    assert resolver.policies.select(client, None, client_id).policy.name == policy


def test_a_client_id_blocks_where_the_address_alone_does_not(resolver: Resolver) -> None:
    data = query("porn.example")
    assert isinstance(resolver.handle(data, "192.168.9.9", transport="tls"), Pending)
    blocked = resolver.handle(data, "192.168.9.9", transport="tls", client_id="k7f3q9x2")
    assert isinstance(blocked, bytes)
    assert answer(blocked)[0] == "NXDOMAIN"


def test_the_cache_key_carries_the_policy_not_the_client_id(resolver: Resolver) -> None:
    data = query("news.example")
    pendings = [
        resolver.handle(data, "192.168.9.9", transport="https", client_id=cid)
        for cid in ("k7f3q9x2", "tablet-2", None, "unknown-id")
    ]
    assert all(isinstance(p, Pending) for p in pendings)
    keys = [p.key for p in pendings]  # type: ignore[union-attr]
    assert keys[0] == keys[1]  # two devices, one policy: one cache entry
    assert keys[2] == keys[3] != keys[0]  # the unknown ID shares the address's entry
    assert not any("k7f3q9x2" in map(str, key) for key in keys)


def test_the_transport_reaches_metrics_and_the_query_log(tmp_path: Path) -> None:
    metrics = Metrics()
    qlog = QueryLog(tmp_path / "q.log", anonymize="none")
    config = make_config(tmp_path, POLICIES)
    resolver = make_resolver(config, Clock(paris(23, 12)))
    resolver.metrics, resolver.querylog = metrics, qlog
    for transport in TRANSPORTS:
        out = resolver.handle(query("porn.example"), "127.0.0.9", transport=transport)
        assert isinstance(out, bytes)
    pending = resolver.handle(query("news.example"), "127.0.0.9", transport="quic")
    assert isinstance(pending, Pending) and pending.transport == "quic" and pending.tcp
    qlog.close()
    lines = [json.loads(line) for line in (tmp_path / "q.log").read_text().splitlines()]
    assert [line["protocol"] for line in lines] == list(TRANSPORTS)
    exposition = generate_latest(metrics.registry).decode()
    for transport in TRANSPORTS:
        assert (
            f'filterdns_queries_total{{protocol="{transport}",qtype="A",result="blocked"}} 1.0'
            in exposition
        )


def test_the_tcp_flag_still_names_udp_and_tcp(resolver: Resolver) -> None:
    # The UDP and TCP listeners (and the C fast path's hand-over) pass `tcp` only.
    assert isinstance(udp := resolver.handle(query("news.example"), "127.0.0.9"), Pending)
    assert isinstance(tcp := resolver.handle(query("news.example"), "127.0.0.9", True), Pending)
    assert (udp.transport, udp.tcp, tcp.transport, tcp.tcp) == ("udp", False, "tcp", True)

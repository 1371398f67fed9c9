"""ClientIDs mapped to policies in C (`_clientids.pyx`, `FastPath.client_id_policy`) on DoT
served from the C stream loop: the mapping against `PolicyTable.select`, blocks and cache
hits answered in C under the ClientID's policy, `client_id_networks`, unknown ClientIDs,
a SIGHUP that changes `client_ids` while a connection is open, and the query log and
metrics as the asyncio path (`fast_path = false`) writes them."""

from __future__ import annotations

import copy
import signal
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode

from dns_resolver.fast._fastpath import FastPath
from tests.dns_resolver.encrypted import (
    KID,
    SERVER_NAME,
    dot_port,
    encrypted_config,
    log_lines,
    read_framed,
    send_framed,
    tls_connect,
)
from tests.dns_resolver.harness import ServerProcess, TestZone, eventually, to_toml
from tests.dns_resolver.policy_helpers import Clock, make_config, make_resolver, paris
from tests.dns_resolver.steps.test_client_id import POLICIES

Start = Callable[..., ServerProcess]
C_LOOP = "DNS over TLS is served from the C stream loop"


def _config(tmp_path: Path, fast_path: bool = True) -> dict[str, Any]:
    """`KID` selects `kid` (blocks adult); the loopback address alone gets `lan`, which
    blocks nothing, and `default` (anyone else) blocks adult: so an answer tells which of
    the three decided."""
    config = encrypted_config(tmp_path)
    config["server"]["fast_path"] = fast_path
    config["policies"] = {
        "kid": {"client_ids": [KID], "block": ["adult"]},
        "lan": {"clients": ["127.0.0.0/8"], "block": []},
        "default": {"block": ["adult"]},
    }
    return config


def _ask(tls: ssl.SSLSocket, name: str, qid: int = 1) -> dns.message.Message:
    send_framed(tls, dns.message.make_query(name, "A", id=qid, use_edns=0).to_wire())
    return dns.message.from_wire(read_framed(tls))


def _reloaded(server: ServerProcess, config: dict[str, Any], count: int) -> None:
    server.config_path.write_text(to_toml(config), encoding="utf-8")
    server.send_signal(signal.SIGHUP)
    assert eventually(
        lambda: server.metric("filterdns_config_reloads_total", result="applied") == count
    )


def test_c_maps_client_ids_as_the_policy_table_does(tmp_path: Path) -> None:
    resolver = make_resolver(make_config(tmp_path, POLICIES), Clock(paris(23, 12)))
    table = resolver.policies
    assert table is not None
    view = table.fast_view()
    fp = FastPath()
    fp.set_policies(
        list(view.networks),
        view.default_index,
        [p.mask for p in view.policies],
        [False] * len(view.policies),
        [],
        view.client_ids,
        view.client_id_networks,
    )
    ids = ("k7f3q9x2", "tablet-2", "s9x", "s9", "k7f3q9x", "k7f3q9x2x", "")
    hosts = (
        "127.0.0.1",
        "10.20.3.4",
        "10.21.0.1",
        "2001:db8::5",
        "2001:db9::5",
        "::ffff:10.20.0.9",
    )
    for client_id in ids:
        for host in hosts:
            selection = table.select(host, None, client_id or None)
            expected = selection.policy.index if selection.via == "clientid" else -1
            assert fp.policy_of_client_id(client_id, host) == expected, (client_id, host)
    assert fp.policy_of_client_id("s9x", "10.20.0.1") == table.by_name["school"].index
    generation = fp.policy_gen
    fp.clear_policies()
    assert fp.policy_gen == generation + 1
    assert fp.policy_of_client_id("k7f3q9x2", "127.0.0.1") == -1


def test_a_client_id_is_blocked_from_c_where_the_address_is_not(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(_config(tmp_path))
    assert C_LOOP in server.stderr_text()
    port = dot_port(server)
    with (
        tls_connect(port, sni=SERVER_NAME) as plain,
        tls_connect(port, sni=f"{KID}.{SERVER_NAME}") as kid,
        tls_connect(port, sni=f"nobody.{SERVER_NAME}") as unknown,
    ):
        for qid in range(3):
            assert _ask(plain, TestZone.BLOCKED, qid).rcode() == dns.rcode.NOERROR
            assert _ask(kid, TestZone.BLOCKED, qid).rcode() == dns.rcode.NXDOMAIN
            # An unknown ClientID gets the address's policy (lan), not the default.
            assert _ask(unknown, TestZone.BLOCKED, qid).rcode() == dns.rcode.NOERROR
        before = server.metric("filterdns_fastpath_answers_total")
        for qid in range(10):
            assert _ask(kid, TestZone.BLOCKED, qid).rcode() == dns.rcode.NXDOMAIN
            assert _ask(kid, TestZone.WWW, qid).rcode() == dns.rcode.NOERROR
    # Python answered the kid policy's first miss (cached for kid, not for lan); C the rest.
    assert server.metric("filterdns_fastpath_answers_total") - before == 19
    assert server.metric("filterdns_queries_total", protocol="tls", result="blocked") == 13
    assert eventually(
        lambda: (
            sum(
                line["result"] == "blocked" and line["category"] == "adult"
                for line in log_lines(tmp_path / "queries.log")
            )
            == 13
        )
    )


def test_client_id_networks_bind_the_client_id_in_c(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    config["policies"]["kid"]["client_id_networks"] = ["192.0.2.0/24"]
    config["policies"]["near"] = {
        "client_ids": ["near1"],
        "client_id_networks": ["127.0.0.0/8"],
        "block": ["adult"],
    }
    server = filterdns_on_nsd(config)
    port = dot_port(server)
    with (
        tls_connect(port, sni=f"{KID}.{SERVER_NAME}") as far,
        tls_connect(port, sni=f"near1.{SERVER_NAME}") as near,
    ):
        for qid in range(3):
            # From 127.0.0.1 the kid ClientID counts for nothing: lan decides.
            assert _ask(far, TestZone.BLOCKED, qid).rcode() == dns.rcode.NOERROR
            assert _ask(near, TestZone.BLOCKED, qid).rcode() == dns.rcode.NXDOMAIN
    assert server.metric("filterdns_fastpath_answers_total") >= 4


def test_a_sighup_that_changes_client_ids_applies_to_open_connections(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(_config(tmp_path))
    config = copy.deepcopy(server.config)
    port = dot_port(server)
    with tls_connect(port, sni=f"kid2.{SERVER_NAME}") as tls:
        assert _ask(tls, TestZone.BLOCKED).rcode() == dns.rcode.NOERROR
        assert _ask(tls, TestZone.BLOCKED).rcode() == dns.rcode.NOERROR  # from C, as lan
        config["policies"]["kid"]["client_ids"] = [KID, "kid2"]
        _reloaded(server, config, 1)
        # The same connection's next query is under kid now, and so are new ones. Python
        # answers the first block (a reload forgets the learnt ones), C the next: had C
        # kept the connection's old policy (lan), they would all go to Python.
        before = server.metric("filterdns_fastpath_answers_total")
        assert _ask(tls, TestZone.BLOCKED).rcode() == dns.rcode.NXDOMAIN
        assert _ask(tls, TestZone.BLOCKED).rcode() == dns.rcode.NXDOMAIN
        with tls_connect(port, sni=f"kid2.{SERVER_NAME}") as fresh:
            assert _ask(fresh, TestZone.BLOCKED).rcode() == dns.rcode.NXDOMAIN
        assert server.metric("filterdns_fastpath_answers_total") - before == 2
        config["policies"]["kid"]["client_ids"] = [KID]
        _reloaded(server, config, 2)
        before = server.metric("filterdns_fastpath_answers_total")
        assert _ask(tls, TestZone.BLOCKED).rcode() == dns.rcode.NOERROR
        assert _ask(tls, TestZone.BLOCKED).rcode() == dns.rcode.NOERROR
        assert server.metric("filterdns_fastpath_answers_total") - before == 1


_VARYING = ("timestamp", "duration_ms")


def test_the_query_log_and_metrics_say_what_python_says(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    """The same queries on a ClientID connection, served from C and from asyncio, give the
    same query log rows (but timings) and the same query counts."""
    rows: dict[bool, list[dict[str, Any]]] = {}
    counts: dict[bool, list[float]] = {}
    for fast in (True, False):
        folder = tmp_path / ("c" if fast else "asyncio")
        folder.mkdir()
        server = filterdns_on_nsd(_config(folder, fast))
        assert (C_LOOP in server.stderr_text()) == fast
        with tls_connect(dot_port(server), sni=f"{KID}.{SERVER_NAME}") as tls:
            for qid, name in enumerate([TestZone.WWW, TestZone.BLOCKED] * 3):
                _ask(tls, name, qid)
        log = folder / "queries.log"
        assert eventually(lambda log=log: len(log_lines(log)) == 6)
        rows[fast] = [
            {k: v for k, v in line.items() if k not in _VARYING} for line in log_lines(log)
        ]
        counts[fast] = [
            server.metric("filterdns_queries_total", protocol="tls", result=result)
            for result in ("cached", "blocked", "allowed")
        ] + [server.metric("filterdns_blocks_total", category="adult", list="test")]
        if fast:  # the repeated queries were C's: 2 cache hits and 2 blocks
            assert server.metric("filterdns_fastpath_answers_total") == 4
        server.stop()
    assert rows[True] == rows[False]
    assert counts[True] == counts[False]
    assert counts[True][1] == counts[True][3] == 3  # every block counted, by its list
    assert {row["result"] for row in rows[True]} >= {"blocked", "cached"}

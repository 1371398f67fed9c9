"""Two `filterdns serve` nodes sharing one real PostgreSQL: a change made through one node's
API is in force at the other within 2 s, also after PostgreSQL restarts; while the
database is down, a node keeps serving the table it has."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.dns_resolver.harness import NsdServer, ServerProcess, free_port
from tests.reports.conftest import PostgresCluster, filterdns_cli
from tests.subscribers.test_e2e import ADULT, allowed, blocked

PROPAGATION = 2.0


def node_config(url: str, name: str) -> dict:
    return {
        "server": {"data_dir": f"data-{name}"},
        "admin": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
        "reports": {"database": url},
        "blocking": {"mode": "nxdomain"},
        "policies": {"child": {"block": ["adult"]}, "default": {"block": []}},
        "subscribers": {"enabled": True, "database": url, "poll_interval": 5.0},
    }


def seconds_until(server: ServerProcess, source: str, want: Callable) -> float:
    started = time.monotonic()
    while not want(server.dig(ADULT, "A", "-b", source, "+tries=1", "+time=1")):
        assert time.monotonic() - started < 10, f"{source} never changed"
        time.sleep(0.02)
    return time.monotonic() - started


def put(base: str, auth: dict[str, str], sid: str, address: str) -> httpx.Response:
    return httpx.put(
        f"{base}/api/subscribers/{sid}",
        headers=auth,
        timeout=10,
        json={"policy": "child", "addresses": [address]},
    )


def test_two_nodes_and_a_postgresql_restart(
    start_filterdns: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
    test_blocklist: Path,
    postgres: PostgresCluster,
) -> None:
    url = postgres.create_database()

    def node(name: str) -> ServerProcess:
        config = node_config(url, name)
        config["lists"] = [{"path": str(test_blocklist), "name": "test", "category": "adult"}]
        # Migrations and two databases to open: slow to answer on a busy machine.
        return start_filterdns(config, upstreams=[nsd_upstream.upstream], ready_timeout=40)

    a = node("a")
    b = node("b")
    token = filterdns_cli(
        "admin",
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "crm",
        "--config",
        str(a.config_path),
    ).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    base_a = "http://" + a.config["admin"]["listen"]

    assert allowed(b.dig(ADULT, "A", "-b", "127.0.0.61"))
    assert put(base_a, auth, "n1", "127.0.0.61").status_code == 201
    # The poll interval is 5 s: only NOTIFY can bring it in time.
    assert seconds_until(b, "127.0.0.61", blocked) < PROPAGATION

    postgres.stop()
    try:
        assert put(base_a, auth, "n2", "127.0.0.62").status_code == 500
        # Both nodes keep serving the table they have.
        assert blocked(b.dig(ADULT, "A", "-b", "127.0.0.61"))
        assert blocked(a.dig(ADULT, "A", "-b", "127.0.0.61"))
    finally:
        postgres.start()
    deadline = time.monotonic() + 30
    while (r := put(base_a, auth, "n2", "127.0.0.62")).status_code != 201:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert seconds_until(b, "127.0.0.62", blocked) < PROPAGATION
    assert blocked(b.dig(ADULT, "A", "-b", "127.0.0.61"))

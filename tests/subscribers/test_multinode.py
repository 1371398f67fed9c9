"""Two `filterdns serve` nodes sharing one real PostgreSQL: a change made through one node's
API is in force at the other within 2 s, also after PostgreSQL restarts; while the
database is down, a node keeps serving the table it has; a subscriber's daily allowance is
one, whichever node it is spent on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from subscribers.store import SubscriberStore
from tests.dns_resolver.harness import DigResult, NsdServer, ServerProcess, eventually, free_port
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


def allowance_spent(result: DigResult) -> bool:
    return result.status == "NXDOMAIN" and "allowance=adult:2min-used-up" in result.ede_text


def test_one_daily_allowance_across_two_nodes(
    start_filterdns: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
    test_blocklist: Path,
    postgres: PostgresCluster,
) -> None:
    """A subscriber spends part of its 2 minutes on node A and the rest on node B (dig from
    its address on each): then it is blocked on both, the minutes counted per subscriber
    in the shared PostgreSQL."""
    url = postgres.create_database()
    nodes = []
    for name in ("a", "b"):
        config = node_config(url, name)
        config["policies"]["child"] = {
            "block": [],
            "allowance": [{"category": "adult", "minutes": 2}],
        }
        config["lists"] = [{"path": str(test_blocklist), "name": "test", "category": "adult"}]
        nodes.append(
            start_filterdns(config, upstreams=[nsd_upstream.upstream], ready_timeout=40)
        )
    a, b = nodes
    token = filterdns_cli(
        "admin", "token", "create", "--role", "admin", "--name", "crm",
        "--config", str(a.config_path),
    ).stdout.strip()  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    base_a = "http://" + a.config["admin"]["listen"]
    assert put(base_a, auth, "kid", "127.0.0.81").status_code == 201
    for n in nodes:
        assert eventually(lambda n=n: n.metric("filterdns_subscriber_addresses") == 1)
    store = SubscriberStore(url, run_migrations=False)

    def minutes_stored() -> int:
        return sum(store.minutes(["kid"], "0000-00-00").values())

    def dig(server: ServerProcess) -> DigResult:
        return server.dig(ADULT, "A", "-b", "127.0.0.81", "+tries=1", "+time=2")

    def next_minute(after: int) -> int:
        while int(time.time() // 60) == after:  # allowances count wall-clock minutes
            time.sleep(0.2)
        return int(time.time() // 60)

    try:
        first = int(time.time() // 60)
        assert allowed(dig(a))  # minute 1, on A
        assert eventually(lambda: minutes_stored() == 1)
        second = next_minute(first)
        assert allowed(dig(b))  # minute 2, on B: the allowance is spent
        assert eventually(lambda: minutes_stored() == 2)
        rounds = a.metric("filterdns_subscriber_allowance_rounds_total", result="ok")
        # A round of A's that began after B's write has read it back.
        assert eventually(
            lambda: a.metric("filterdns_subscriber_allowance_rounds_total", result="ok")
            >= rounds + 2
        )
        assert allowance_spent(dig(a))
        # B's own last minute lasts to its end; the next one is refused.
        next_minute(second)
        assert allowance_spent(dig(b))
        assert allowance_spent(dig(a))
        assert minutes_stored() == 2
    finally:
        store.close()

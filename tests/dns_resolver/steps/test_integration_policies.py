"""Policies end to end: `filterdns serve` against NSD, queried with dig from different
loopback source addresses, through a trusted and an untrusted "forwarder" with ECS and the
dnsmasq MAC option, with safe-search targets resolved upstream, a schedule window that is
open now, an allowance already spent before the start (it survives restarts), the canary
names, and `examples/family.toml` as shipped."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dns_resolver.steps.allowance import AllowanceStore
from tests.dns_resolver.harness import (
    NsdServer,
    ServerProcess,
    TestZone,
    dig,
    free_port,
    wait_for_dns,
    write_list,
)
from tests.dns_resolver.policy_zone import GOOGLE_SAFE_A, YOUTUBE_MODERATE_A

REPO = Path(__file__).resolve().parents[3]
CHILD, OTHER, FORWARDER, STRANGER = "127.0.0.2", "127.0.0.1", "127.0.0.3", "127.0.0.4"
ADULT = TestZone.BLOCKED.rstrip(".")
GAMES = TestZone.SHORT.rstrip(".")
SOCIAL = TestZone.MULTI.rstrip(".")


def open_window_now() -> dict[str, object]:
    """A schedule window (UTC) that is open now and for the next 10 minutes."""
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=2), now + dt.timedelta(minutes=10)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[start.weekday()]
    return {
        "name": "now-window",
        "days": [day],
        "start": start.strftime("%H:%M"),
        "end": end.strftime("%H:%M"),
        "block": ["games"],
    }


@pytest.fixture
def server(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], policy_nsd: NsdServer
) -> ServerProcess:
    lists = [
        {"path": str(write_list(tmp_path, [ADULT], "adult.txt")), "category": "adult"},
        {"path": str(write_list(tmp_path, [GAMES], "games.txt")), "category": "games"},
        {"path": str(write_list(tmp_path, [SOCIAL], "social.txt")), "category": "social"},
    ]
    # The child has already used its one minute of social networks today (another run of
    # the resolver recorded it): the allowance is spent from the first query on.
    now = dt.datetime.now(dt.UTC).timestamp()
    store = AllowanceStore(tmp_path / "allowances.sqlite", flush_interval=60)
    store.use(dt.datetime.now(dt.UTC).date().isoformat(), CHILD, "social", int(now // 60) - 5, 1)
    store.close()
    config = {
        "upstream": {"servers": [policy_nsd.upstream]},
        "lists": lists,
        "clients": {"trusted_forwarders": [f"{FORWARDER}/32"]},
        "policies": {
            "child": {
                "clients": [f"{CHILD}/32"],
                "macs": ["02:00:00:00:00:01"],
                "block": ["adult"],
                "safe_search": True,
                "youtube": "moderate",
                "schedule": [open_window_now()],
                "allowance": [{"category": "social", "minutes": 1}],
            },
            "default": {"block": ["malware-phishing"]},
        },
    }
    return start_filterdns(config)


def ede(result) -> str:  # type: ignore[no-untyped-def]
    assert result.ede, result.stdout
    return result.ede[0][1]


def test_source_addresses_map_to_policies(server: ServerProcess) -> None:
    child = server.dig(ADULT, "A", "-b", CHILD)
    assert child.status == "NXDOMAIN"
    assert child.ede == [(17, f"blocked: category=adult list=adult rule={ADULT} policy=child")]
    other = server.dig(ADULT, "A", "-b", OTHER)
    assert other.status == "NOERROR" and other.rdata("A") == [TestZone.BLOCKED_A]


def test_ecs_from_trusted_and_untrusted_forwarders(server: ServerProcess) -> None:
    trusted = server.dig(ADULT, "A", "-b", FORWARDER, f"+subnet={CHILD}/32")
    assert trusted.status == "NXDOMAIN" and ede(trusted).endswith("policy=child")
    untrusted = server.dig(ADULT, "A", "-b", STRANGER, f"+subnet={CHILD}/32")
    assert untrusted.status == "NOERROR" and untrusted.rdata("A") == [TestZone.BLOCKED_A]
    # The forwarder's own queries without ECS get its own (default) policy.
    assert server.dig(ADULT, "A", "-b", FORWARDER).status == "NOERROR"


def test_mac_option_from_a_trusted_forwarder(server: ServerProcess) -> None:
    mac = server.dig(ADULT, "A", "-b", FORWARDER, "+ednsopt=65001:020000000001")
    assert mac.status == "NXDOMAIN" and ede(mac).endswith("policy=child")
    ignored = server.dig(ADULT, "A", "-b", STRANGER, "+ednsopt=65001:020000000001")
    assert ignored.status == "NOERROR"


def test_safe_search_cnames_resolved_upstream(server: ServerProcess) -> None:
    google = server.dig("www.google.com", "A", "-b", CHILD)
    assert google.status == "NOERROR"
    assert [(r.rtype, r.data) for r in google.answer] == [
        ("CNAME", "forcesafesearch.google.com."),
        ("A", GOOGLE_SAFE_A),
    ]
    youtube = server.dig("www.youtube.com", "A", "-b", CHILD)
    assert youtube.rdata("CNAME") == ["restrictmoderate.youtube.com."]
    assert youtube.rdata("A") == [YOUTUBE_MODERATE_A]
    plain = server.dig("www.google.com", "A", "-b", OTHER)
    assert plain.rdata("CNAME") == [] and plain.rdata("A") == ["192.0.2.1"]


def test_schedule_window_open_now(server: ServerProcess) -> None:
    child = server.dig(GAMES, "A", "-b", CHILD)
    assert child.status == "NXDOMAIN"
    assert ede(child) == (
        f"blocked: category=games list=games rule={GAMES} policy=child schedule=now-window"
    )
    assert server.dig(GAMES, "A", "-b", OTHER).status == "NOERROR"


def test_spent_allowance_survives_the_restart(server: ServerProcess) -> None:
    child = server.dig(SOCIAL, "A", "-b", CHILD)
    assert child.status == "NXDOMAIN"
    assert ede(child).endswith("policy=child allowance=social:1min-used-up-until-tomorrow")
    assert server.dig(SOCIAL, "A", "-b", OTHER).status == "NOERROR"


def test_canary_names(server: ServerProcess) -> None:
    for name in ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"):
        result = server.dig(name, "A", "-b", CHILD)
        assert result.status == "NXDOMAIN", name
        assert result.ede[0][0] == 17 and "list=bypass-prevention" in ede(result)
    ddr = server.dig("_dns.resolver.arpa", "SVCB", "-b", CHILD)
    assert ddr.status == "NOERROR" and ddr.answer == []


def test_family_example_runs(tmp_path: Path, policy_nsd: NsdServer) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "filterdns",
                "serve",
                "--config",
                str(REPO / "examples" / "family.toml"),
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                policy_nsd.upstream,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert wait_for_dns(port, timeout=30, is_alive=lambda: proc.poll() is None), (
            tmp_path / "stderr"
        ).read_text()
        canary = dig("127.0.0.1", port, "use-application-dns.net", "A", "-b", CHILD)
        assert canary.status == "NXDOMAIN" and canary.ede[0][1].endswith("policy=child")
        google = dig("127.0.0.1", port, "www.google.com", "A", "-b", CHILD)
        assert google.rdata("CNAME") == ["forcesafesearch.google.com."]
        youtube = dig("127.0.0.1", port, "m.youtube.com", "A", "-b", CHILD)
        assert youtube.rdata("CNAME") == ["restrictmoderate.youtube.com."]
        adult = first_listed(REPO / "lists" / "default" / "ut1" / "mixed_adult" / "domains")
        blocked = dig("127.0.0.1", port, adult, "A", "-b", CHILD)
        assert blocked.status == "NXDOMAIN" and "category=adult" in blocked.ede[0][1]
        # Every other client: default policy, only malware-phishing blocked (the name is
        # forwarded; the test upstream does not serve it, hence no block and no answer).
        passed = dig("127.0.0.1", port, adult, "A", "-b", OTHER)
        assert passed.status != "NXDOMAIN" and not any(c in (15, 17) for c, _ in passed.ede)
        assert dig("127.0.0.1", port, "www.google.com", "A").rdata("CNAME") == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def first_listed(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            return line.strip()
    raise AssertionError(f"{path} lists nothing")

"""Leads, end to end: `filterdns serve` with `[observed]` on, NSD as upstream, 20 loopback
clients, a reviewer's decision over the admin API and `dig` answering it within 5 s."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.dns_resolver.harness import NsdServer, ServerProcess, eventually, free_port, query
from tests.dns_resolver.policy_zone import _zone
from tests.reports.browser import Browser
from tests.reports.test_console_browser import log_in
from tests.reports.test_e2e import DECISION_DEADLINE, reviewer_token, wait_for_dig

NEW_DOMAIN = "lucky-spins-online.com"  # CNAME to a name the gambling list holds
NEW_NAME = f"www.{NEW_DOMAIN}"
QUIET_NAME = "www.quiet-newsite.org"  # asked by one client only
CASINO = "casino-target.net"
CLIENTS = [f"127.0.0.{i}" for i in range(10, 30)]

ZONES = {
    f"{NEW_DOMAIN}.": _zone(f"{NEW_DOMAIN}.", f"www IN CNAME play.{CASINO}.\n"),
    f"{CASINO}.": _zone(f"{CASINO}.", "play IN A 192.0.2.50\n"),
    "quiet-newsite.org.": _zone("quiet-newsite.org.", "www IN A 192.0.2.51\n"),
}


@pytest.fixture
def leads_nsd(tmp_path: Path) -> Iterator[NsdServer]:
    server = NsdServer(tmp_path / "nsd", extra_zones=ZONES)
    server.start()
    yield server
    server.stop()


def test_a_new_domain_with_a_gambling_cname_becomes_a_lead_and_is_blocked_by_decision(
    start_filterdns: Callable[..., ServerProcess], leads_nsd: NsdServer, tmp_path: Path
) -> None:
    gambling = tmp_path / "gambling.txt"
    gambling.write_text(f"{CASINO}\n")
    server = start_filterdns(
        {
            "server": {"data_dir": "data"},
            "admin": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
            "blocking": {"mode": "nxdomain", "inspect_answers": False},
            "lists": [{"path": str(gambling), "name": "bets", "category": "gambling"}],
            "observed": {"enabled": True, "memory": 65536},
            # Loopback clients share one /24: count them by address here (/32 networks).
            "leads": {"min_clients": 20, "window": "1h", "ipv4_prefix": 32},
        },
        upstreams=[leads_nsd.upstream],
    )
    base = "http://" + server.config["admin"]["listen"]
    auth = {"Authorization": f"Bearer {reviewer_token(server)}"}

    # Not inspected here, so the answer passes: only a lead can get it reviewed.
    assert server.dig(NEW_NAME).status == "NOERROR"
    for source in CLIENTS:
        reply = query(server.port, NEW_NAME, source=source)
        assert reply.rcode() == 0
    assert query(server.port, QUIET_NAME, source=CLIENTS[0]).rcode() == 0

    def leads() -> list[dict]:
        r = httpx.get(f"{base}/api/reports?kind=lead", headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["reports"]

    assert eventually(lambda: len(leads()) == 1, timeout=10)
    (lead,) = leads()
    assert lead["host"] == NEW_DOMAIN and lead["kind"] == "lead"
    assert lead["source"] == "observed" and lead["category"] == "gambling"
    evidence = lead["evidence"]
    assert evidence["client_networks"] >= 20
    assert evidence["queries"] >= len(CLIENTS)
    (signal,) = evidence["signals"]
    assert signal["signal"] == "cname_target" and signal["category"] == "gambling"
    assert signal["detail"] == f"cname=play.{CASINO}"
    # The names of the clients are nowhere in what was stored.
    assert not any(address in json.dumps(lead) for address in CLIENTS)
    # One client: newly observed, but no lead.
    assert all(r["host"] != "quiet-newsite.org" for r in leads())
    assert server.metric("filterdns_observed_domains_total") == 2
    assert server.metric("filterdns_leads_raised_total") == 1
    assert server.metric("filterdns_observed_dropped_total") == 0

    # The review page says what the lead is and why it was raised.
    browser = Browser(tmp_path / "browser")
    try:
        log_in(browser, base, auth["Authorization"].split()[1], "/review")
        browser.wait_for("document.querySelectorAll('#queue tbody tr').length > 0")
        browser.evaluate("document.querySelector('#queue tbody tr').click()")
        browser.wait_for("!document.getElementById('details').hidden")
        assert browser.evaluate("document.getElementById('d-kind').innerText") == (
            "lead: a newly observed domain"
        )
        why = browser.evaluate("document.getElementById('d-why').innerText")
        assert f"cname_target cname=play.{CASINO} (gambling)" in why
        assert "client networks" in why
    finally:
        browser.close()

    r = httpx.post(
        f"{base}/api/reports/{lead['id']}/decision",
        json={"action": "block", "category": "gambling", "reason": "casino front"},
        headers=auth,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    blocked, took = wait_for_dig(server, NEW_NAME, lambda d: d.status == "NXDOMAIN")
    assert blocked.status == "NXDOMAIN" and took < DECISION_DEADLINE
    assert "category=gambling" in blocked.ede_text

    data = Path(server.config_path).parent / "data"
    records = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    (raised,) = [r for r in records if r["kind"] == "lead-raised"]
    assert raised["report_id"] == lead["id"] and raised["source"] == "observed"
    (decision,) = [r for r in records if r["kind"] == "review-decision"]
    assert decision["report_id"] == lead["id"]
    assert decision["report_kind"] == "lead" and decision["source"] == "observed"
    (change,) = [r for r in records if r["kind"] == "override-change"]
    assert change["report_id"] == lead["id"] and change["report_kind"] == "lead"


def test_with_two_workers_the_clients_of_both_count_toward_one_lead(
    start_filterdns: Callable[..., ServerProcess], leads_nsd: NsdServer
) -> None:
    # SO_REUSEPORT spreads the 20 sources over the two workers (all in one: 2 ** -19);
    # worker 0 counts the clients the other one saw too.
    server = start_filterdns(
        {
            "server": {"workers": 2},
            "observed": {"enabled": True, "memory": 65536},
            "leads": {"min_clients": 20, "window": "1h", "ipv4_prefix": 32,
                      "require_signal": False},
        },
        upstreams=[leads_nsd.upstream],
    )
    for source in CLIENTS:
        assert query(server.port, NEW_NAME, source=source).rcode() == 0
    assert eventually(lambda: f"lead raised for {NEW_DOMAIN}" in server.stderr_text()), (
        server.stderr_text()
    )
    # Counted once, though each worker's own filters found the domain new.
    assert server.stderr_text().count(f"newly observed domain {NEW_DOMAIN}") == 1
    raised = f"lead raised for {NEW_DOMAIN}"
    line = next(line for line in server.stderr_text().splitlines() if raised in line)
    assert "'client_networks': 20" in line
    assert server.metric("filterdns_leads_raised_total") == 1

"""End to end: `filterdns serve` with the admin API, a report over HTTP, a reviewer's
decision, and `dig` answering accordingly within 5 seconds, with the audit entry present."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.dns_resolver.harness import DigResult, ServerProcess, TestZone, free_port
from tests.reports.conftest import filterdns_cli

DECISION_DEADLINE = 5.0


def admin_config() -> dict:
    return {
        "server": {"data_dir": "data"},
        "admin": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
        "reports": {"burst": 100},
        "blocking": {"mode": "nxdomain"},
    }


def reviewer_token(server: ServerProcess, role: str = "reviewer", name: str = "alice") -> str:
    """A new token for `server`'s data directory, made with the CLI."""
    return filterdns_cli(
        "admin",
        "token",
        "create",
        "--role",
        role,
        "--name",
        name,
        "--config",
        str(server.config_path),
    ).stdout.strip()


def admin_url(server: ServerProcess) -> str:
    return "http://" + server.config["admin"]["listen"]


def wait_for_dig(
    server: ServerProcess, name: str, want: Callable[[DigResult], bool]
) -> tuple[DigResult, float]:
    """dig until `want(result)`; the result and the seconds it took (bounded)."""
    started = time.monotonic()
    while True:
        result = server.dig(name, "A", "+tries=1", "+time=1")
        elapsed = time.monotonic() - started
        if want(result) or elapsed > DECISION_DEADLINE + 5:
            return result, elapsed
        time.sleep(0.1)


def test_report_then_block_then_appeal_then_allow(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd(admin_config())
    base = admin_url(server)
    token = reviewer_token(server)
    auth = {"Authorization": f"Bearer {token}"}
    www = TestZone.WWW.rstrip(".")

    before = server.dig(www)
    assert before.status == "NOERROR" and before.rdata("A") == [TestZone.WWW_A]

    # A miss reported by the public, decided "block" by a reviewer.
    r = httpx.post(
        f"{base}/api/reports",
        json={"target": f"http://{www}/casino", "kind": "report", "category": "gambling"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    queue = httpx.get(f"{base}/api/reports?status=open", headers=auth, timeout=10).json()
    assert queue["reports"][0]["verdict"]["action"] == "none"
    r = httpx.post(
        f"{base}/api/reports/{r.json()['id']}/decision",
        json={"action": "block", "category": "gambling", "reason": "online casino"},
        headers=auth,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    blocked, took = wait_for_dig(server, www, lambda d: d.status == "NXDOMAIN")
    assert blocked.status == "NXDOMAIN" and took < DECISION_DEADLINE
    assert "list=overrides" in blocked.ede_text and "category=gambling" in blocked.ede_text

    # An appeal of a listed name, from the form, decided "allow".
    listed = TestZone.BLOCKED.rstrip(".")
    assert server.dig(listed).status == "NXDOMAIN"
    r = httpx.post(
        f"{base}/api/reports",
        data={"target": listed, "kind": "appeal", "category": "adult", "list": "test"},
        timeout=10,
    )
    assert r.status_code == 303
    appeal_id = int(r.headers["Location"].rsplit("=", 1)[1])
    detail = httpx.get(f"{base}/api/reports/{appeal_id}", headers=auth, timeout=10).json()
    assert detail["kind"] == "appeal" and detail["verdict"]["list"] == "test"
    r = httpx.post(
        f"{base}/api/reports/{appeal_id}/decision",
        json={"action": "allow", "reason": "a health charity"},
        headers=auth,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    allowed, took = wait_for_dig(server, listed, lambda d: d.status == "NOERROR")
    assert allowed.rdata("A") == [TestZone.BLOCKED_A] and took < DECISION_DEADLINE

    # A list reload keeps the overrides on top.
    admin = reviewer_token(server, "admin")
    r = httpx.post(f"{base}/api/reload", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert r.json() == {"reloaded": True, "config": "applied"}
    assert server.dig(www).status == "NXDOMAIN"
    assert server.dig(listed).status == "NOERROR"

    # Names under an override are decided in Python (the allow covers the subdomain too);
    # everything else stays in the C fast path, misses forwarded from C included.
    punted = server.metric("filterdns_fastpath_fallbacks_total", reason="policy")
    assert server.dig(TestZone.BLOCKED_SUB).status == "NOERROR"
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="policy") == punted + 1
    answers = server.metric("filterdns_fastpath_answers_total")
    assert server.dig(TestZone.MAIL).rdata("A") == [TestZone.MAIL_A]
    assert server.metric("filterdns_fastpath_answers_total") == answers + 1

    # Both decisions are on record, with reviewer and reason, in the file and the export.
    data = Path(server.config_path).parent / "data"
    records = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    decisions = [r for r in records if r["kind"] == "review-decision"]
    assert [(d["host"], d["action"], d["reason"]) for d in decisions] == [
        (www, "block", "online casino"),
        (listed, "allow", "a health charity"),
    ]
    assert all(d["reviewer"].startswith("alice") for d in decisions)
    assert len([r for r in records if r["kind"] == "override-change"]) == 2
    exported = filterdns_cli(
        "admin", "audit", "export", "--format", "csv", "--config", str(server.config_path)
    ).stdout
    assert "online casino" in exported and "a health charity" in exported
    assert 'host = "www.filterdns.test"' in (data / "overrides.toml").read_text()


def test_overrides_survive_a_restart(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    config = admin_config()
    server = filterdns_on_nsd(config)
    token = reviewer_token(server)
    base = admin_url(server)
    rid = httpx.post(f"{base}/api/reports", json={"target": "mail.filterdns.test"}).json()["id"]
    httpx.post(
        f"{base}/api/reports/{rid}/decision",
        json={"action": "block", "category": "chat", "reason": "test"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).raise_for_status()
    assert server.stop() == 0
    again = filterdns_on_nsd(config)
    assert again.dig("mail.filterdns.test").status == "NXDOMAIN"


def test_serve_refuses_to_start_when_the_admin_port_is_taken(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.dns_resolver.harness import REPO_ROOT, to_toml

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            to_toml(
                {
                    "server": {"listen": [f"127.0.0.1:{free_port()}"], "data_dir": "data"},
                    "upstream": {"servers": ["127.0.0.1:9"]},
                    "metrics": {"listen": ""},
                    "admin": {"enabled": True, "listen": f"127.0.0.1:{port}"},
                }
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "filterdns", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    assert result.returncode == 1
    assert "cannot start the admin API" in result.stderr

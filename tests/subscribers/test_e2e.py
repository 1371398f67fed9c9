"""End to end on a real `filterdns serve`: FreeRADIUS's radclient as the access gateway,
the provisioning API over HTTP, the CLI, and dig from the subscribers' addresses."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.dns_resolver.harness import DigResult, ServerProcess, TestZone, eventually, free_port
from tests.reports.conftest import filterdns_cli

SECRET = "s3cret-radius"
ADULT = TestZone.BLOCKED.rstrip(".")
START_DEADLINE = 1.0


def subscriber_config(radius_port: int) -> dict:
    return {
        "server": {"data_dir": "data"},
        "admin": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
        "blocking": {"mode": "nxdomain"},
        "policies": {"child": {"block": ["adult"]}, "default": {"block": []}},
        "subscribers": {"enabled": True, "poll_interval": 0.2},
        "radius": {
            "listen": f"127.0.0.1:{radius_port}",
            "secret": SECRET,
            "clients": ["127.0.0.0/8"],
        },
    }


def admin_token(server: ServerProcess) -> dict[str, str]:
    token = filterdns_cli(
        "admin",
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "provisioning",
        "--config",
        str(server.config_path),
    ).stdout.strip()
    return {"Authorization": f"Bearer {token}"}


def radclient(port: int, secret: str, **attributes: str) -> bool:
    """Send one Accounting-Request with radclient; True when answered."""
    text = ",".join(f"{k.replace('_', '-')}={v}" for k, v in attributes.items())
    done = subprocess.run(
        ["radclient", "-r", "1", "-t", "2", f"127.0.0.1:{port}", "acct", secret],
        input=text,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.returncode == 0 and "Accounting-Response" in done.stdout


def audit_records(server: ServerProcess) -> list[dict]:
    path = Path(server.config_path).parent / "data" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def dig_from(server: ServerProcess, source: str) -> DigResult:
    return server.dig(ADULT, "A", "-b", source, "+tries=1", "+time=1")


def until(server: ServerProcess, source: str, want: Callable[[DigResult], bool]) -> float:
    """Seconds until dig from `source` gets `want` (bounded at 5 s)."""
    started = time.monotonic()
    while not want(dig_from(server, source)):
        assert time.monotonic() - started < 5, f"{source}: {dig_from(server, source)}"
        time.sleep(0.02)
    return time.monotonic() - started


def blocked(result: DigResult) -> bool:
    return result.status == "NXDOMAIN" and "policy=child" in result.ede_text


def allowed(result: DigResult) -> bool:
    return result.status == "NOERROR" and result.rdata("A") == [TestZone.BLOCKED_A]


@pytest.fixture
def server(serve: Callable[[dict], ServerProcess]) -> ServerProcess:
    port = free_port()
    server = serve(subscriber_config(port))
    server.radius_port = port  # type: ignore[attr-defined]
    return server


def test_radius_start_interim_stop_and_a_wrong_secret(server: ServerProcess) -> None:
    port = server.radius_port  # type: ignore[attr-defined]
    base = "http://" + server.config["admin"]["listen"]
    r = httpx.put(
        f"{base}/api/subscribers/sub42",
        json={"policy": "child"},
        headers=admin_token(server),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert allowed(dig_from(server, "127.0.0.42"))

    assert radclient(
        port,
        SECRET,
        User_Name="sub42",
        Acct_Status_Type="Start",
        Acct_Session_Id="s1",
        Framed_IP_Address="127.0.0.42",
    )
    assert until(server, "127.0.0.42", blocked) < START_DEADLINE
    # Answered in C from then on, cache hits included (the key carries the policy).
    answers = server.metric("filterdns_fastpath_answers_total")
    assert blocked(dig_from(server, "127.0.0.42"))
    assert server.metric("filterdns_fastpath_answers_total") == answers + 1

    assert radclient(
        port,
        SECRET,
        User_Name="sub42",
        Acct_Status_Type="Interim-Update",
        Acct_Session_Id="s1",
        Framed_IP_Address="127.0.0.43",
    )
    assert until(server, "127.0.0.43", blocked) < START_DEADLINE
    assert allowed(dig_from(server, "127.0.0.42"))

    # A wrong secret: no answer, nothing changes, counted.
    assert not radclient(
        port,
        "wrong",
        User_Name="sub42",
        Acct_Status_Type="Start",
        Acct_Session_Id="s2",
        Framed_IP_Address="127.0.0.44",
    )
    assert allowed(dig_from(server, "127.0.0.44"))
    assert server.metric("filterdns_radius_dropped_total", reason="bad_authenticator") == 1

    assert radclient(
        port,
        SECRET,
        User_Name="sub42",
        Acct_Status_Type="Stop",
        Acct_Session_Id="s1",
        Framed_IP_Address="127.0.0.43",
    )
    assert until(server, "127.0.0.43", allowed) < START_DEADLINE
    assert server.metric("filterdns_radius_requests_total", status="Start") == 1
    assert server.metric("filterdns_radius_requests_total", status="Stop") == 1

    # Each change of addresses is audited with the NAS that sent it (after the answer).
    def radius_changes() -> list[tuple]:
        return [
            (r["status"], r["id"], r["added"], r["removed"], r["by"])
            for r in audit_records(server)
            if r["kind"] == "subscriber" and r["action"] == "radius"
        ]

    assert eventually(lambda: len(radius_changes()) == 3)
    assert radius_changes() == [
        ("Start", "sub42", ["127.0.0.42/32"], [], "radius:127.0.0.1"),
        ("Interim-Update", "sub42", ["127.0.0.43/32"], ["127.0.0.42/32"], "radius:127.0.0.1"),
        ("Stop", "sub42", [], ["127.0.0.43/32"], "radius:127.0.0.1"),
    ]


def test_provisioning_api_cli_own_lists_and_audit(server: ServerProcess, tmp_path: Path) -> None:
    base = "http://" + server.config["admin"]["listen"]
    auth = admin_token(server)
    r = httpx.put(
        f"{base}/api/subscribers/sub7",
        headers=auth,
        timeout=10,
        json={
            "policy": "default",
            "addresses": ["127.0.0.7", "2001:db8:7::/56"],
            "block_domains": [TestZone.WWW.rstrip(".")],
            "allow_domains": [],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["addresses"] == ["127.0.0.7/32", "2001:db8:7::/56"]
    bad = httpx.put(
        f"{base}/api/subscribers/sub8", headers=auth, timeout=10, json={"policy": "nope"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "policy"
    assert (
        httpx.put(f"{base}/api/subscribers/sub8", json={"policy": "child"}, timeout=10).status_code
        == 401
    )
    # Own lists: decided in Python, before the policy.
    www = lambda: server.dig(TestZone.WWW, "A", "-b", "127.0.0.7")  # noqa: E731
    deadline = time.monotonic() + 5
    while www().status != "NXDOMAIN" and time.monotonic() < deadline:
        time.sleep(0.05)
    own = www()
    assert own.status == "NXDOMAIN" and "list=subscriber" in own.ede_text
    assert server.dig(TestZone.WWW, "A", "-b", "127.0.0.8").status == "NOERROR"

    found = httpx.get(
        f"{base}/api/subscribers", params={"address": "2001:db8:7:42::1"}, headers=auth, timeout=10
    ).json()
    assert found["subscriber"]["id"] == "sub7" and found["matched"] == "2001:db8:7::/56"
    nobody = httpx.get(
        f"{base}/api/subscribers", params={"address": "127.0.0.9"}, headers=auth, timeout=10
    ).json()
    assert nobody == {
        "address": "127.0.0.9",
        "subscriber": None,
        "policy": "default",
        "via": "default",
    }

    # Bulk import through the API (JSON lines) and the CLI (CSV, with its progress bar).
    lines = "\n".join(
        json.dumps({"id": f"bulk{i}", "policy": "child", "addresses": [f"127.0.1.{i}"]})
        for i in range(1, 51)
    )
    r = httpx.post(
        f"{base}/api/subscribers/import",
        content=lines,
        timeout=30,
        headers={**auth, "Content-Type": "application/x-ndjson"},
    )
    assert r.json() == {"imported": 50}
    assert until(server, "127.0.1.50", blocked) < 5
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text(
        "id,policy,addresses\n" + "".join(f"csv{i},child,127.0.2.{i}\n" for i in range(1, 21))
    )
    done = filterdns_cli(
        "subscribers", "import", str(csv_file), "--config", str(server.config_path)
    )
    assert "20 subscribers imported" in done.stderr
    assert until(server, "127.0.2.20", blocked) < 5
    shown = json.loads(
        filterdns_cli(
            "subscribers", "show", "127.0.2.20", "--config", str(server.config_path)
        ).stdout
    )
    assert shown["subscriber"]["id"] == "csv20" and shown["policy"] == "child"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("id,policy\nok1,child\nbad one,child\n")
    failed = filterdns_cli(
        "subscribers",
        "import",
        str(bad_csv),
        "--quiet",
        "--config",
        str(server.config_path),
        check=False,
    )
    assert failed.returncode == 2 and "line 3: id:" in failed.stderr

    paths = httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    assert {"put", "get", "delete"} <= set(paths["/api/subscribers/{id}"])
    assert "/api/subscribers/import" in paths and "/api/reports" in paths

    r = httpx.delete(f"{base}/api/subscribers/sub7", headers=auth, timeout=10)
    assert r.json()["removed"]["id"] == "sub7"
    assert httpx.get(f"{base}/api/subscribers/sub7", headers=auth, timeout=10).status_code == 404

    records = audit_records(server)
    changes = [
        (r["action"], r.get("id"), r["by"].split(" ")[0])
        for r in records
        if r["kind"] == "subscriber"
    ]
    assert changes[0] == ("put", "sub7", "provisioning")
    assert ("import", None, "provisioning") in changes and ("import", None, "cli") in changes
    assert changes[-1] == ("delete", "sub7", "provisioning")


def test_workers_share_one_table_fed_by_the_api_and_radius(
    serve: Callable[[dict], ServerProcess],
) -> None:
    """With workers the supervisor writes the table and hears RADIUS; worker 0 serves the
    admin listener (console and provisioning API) and writes the API's changes to the
    store. Every worker maps the same file, a change is in force on every worker within
    1 s, and the supervisor's /metrics has the RADIUS and table figures."""
    port = free_port()
    config = subscriber_config(port)
    config["server"]["workers"] = 2
    # Far beyond the deadline: only worker 0's wake-up can bring an API change in time.
    config["subscribers"]["poll_interval"] = 30
    server = serve(config)
    base = "http://" + server.config["admin"]["listen"]
    auth = admin_token(server)
    r = httpx.put(
        f"{base}/api/subscribers/sub42",
        json={"policy": "child", "addresses": ["127.0.0.51"]},
        headers=auth,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert until(server, "127.0.0.51", blocked) < START_DEADLINE
    # dig picks a new source port each time: the kernel spreads them over the workers.
    assert all(blocked(dig_from(server, "127.0.0.51")) for _ in range(12))
    # A streamed import through the same listener, and the console beside it.
    rows = "\n".join(
        json.dumps({"id": f"imp{i}", "policy": "child", "addresses": [f"127.0.1.{i}"]})
        for i in range(1, 6)
    )
    imported = httpx.post(
        f"{base}/api/subscribers/import",
        content=rows.encode(),
        headers={**auth, "Content-Type": "application/x-ndjson"},
        timeout=10,
    )
    assert imported.json() == {"imported": 5}, imported.text
    assert until(server, "127.0.1.5", blocked) < START_DEADLINE
    # The listener is a worker's: its check API has the lists (the supervisor has none).
    check = httpx.get(f"{base}/api/check", params={"name": ADULT}, headers=auth, timeout=10)
    assert check.json()["action"] == "block", check.text
    # A reload through it is the supervisor's: it re-reads the file and counts it.
    reload = httpx.post(f"{base}/api/reload", headers=auth, timeout=10)
    assert reload.json() == {"reloaded": True, "config": "requested"}
    assert eventually(
        lambda: server.metric("filterdns_config_reloads_total", result="applied") == 1, 5
    )
    changes = [
        (r["action"], r["by"].split(" ")[0])
        for r in audit_records(server)
        if r["kind"] == "subscriber"
    ]
    assert changes == [("put", "provisioning"), ("import", "provisioning")]
    assert radclient(
        port,
        SECRET,
        User_Name="sub42",
        Acct_Status_Type="Start",
        Acct_Session_Id="w1",
        Framed_IP_Address="127.0.0.52",
    )
    assert until(server, "127.0.0.52", blocked) < START_DEADLINE
    assert all(blocked(dig_from(server, "127.0.0.52")) for _ in range(12))
    assert not radclient(port, "wrong", User_Name="sub42", Acct_Status_Type="Stop")
    assert server.metric("filterdns_radius_requests_total", status="Start") == 1
    assert server.metric("filterdns_radius_dropped_total", reason="bad_authenticator") == 1
    assert server.metric("filterdns_subscriber_addresses") == 2 + 5  # with the imported
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    table = str(Path(server.config_path).parent / "data" / "subscribers.table")
    # One file, mapped by each worker (the list reloader's child may be there too).
    mapping = [pid for pid in children if table in Path(f"/proc/{pid}/maps").read_text()]
    assert len(mapping) >= 2


def test_workers_stop_when_the_admin_listener_cannot_start(
    serve: Callable[[dict], ServerProcess],
) -> None:
    """Worker 0's admin listener on a port in use fails the start, as it would in one
    process: not a server without its provisioning API and console."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = subscriber_config(free_port())
        config["admin"]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        config["server"]["workers"] = 2
        try:
            server = serve(config)
        except RuntimeError as exc:  # gone before its workers answered
            assert "cannot start the admin API" in str(exc)
            return
        assert eventually(lambda: not server.running(), timeout=20)
        assert server.proc.returncode == 1
        assert "cannot start the admin API" in server.stderr_text()

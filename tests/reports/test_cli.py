"""`filterdns admin ...` commands, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reports.store import Store, data_dir_url
from tests.dns_resolver.harness import REPO_ROOT
from tests.reports.conftest import filterdns_cli as run


def test_token_lifecycle(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    created = run(
        "admin", "token", "create", "--role", "reviewer", "--name", "alice", "--data-dir", data
    )
    token = created.stdout.strip()
    assert token.startswith("fdns_") and "\n" not in token
    assert "shown only now" in created.stderr
    listing = run("admin", "token", "list", "--data-dir", data).stdout
    assert "alice" in listing and "reviewer" in listing and token not in listing
    store = Store(data_dir_url(data))
    assert store.authenticate(token).name == "alice"
    run("admin", "token", "revoke", "1", "--data-dir", data)
    assert store.authenticate(token) is None
    store.close()
    missing = run("admin", "token", "revoke", "9", "--data-dir", data, check=False)
    assert missing.returncode == 2 and "no token 9" in missing.stderr
    bad = run("admin", "token", "create", "--role", "root", "--data-dir", data, check=False)
    assert bad.returncode == 2
    nowhere = run("admin", "token", "list", check=False)
    assert nowhere.returncode == 2 and "--data-dir" in nowhere.stderr


def test_config_locates_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('[server]\ndata_dir = "state"\n')
    run("admin", "token", "create", "--role", "admin", "--config", str(tmp_path / "c.toml"))
    assert (tmp_path / "state" / "reports.db").exists()


def test_audit_export(tmp_path: Path) -> None:
    from listsync.audit import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"kind": "list-update", "source": "ut1", "result": "applied"})
    log.append(
        {
            "kind": "review-decision",
            "reviewer": "alice",
            "action": "allow",
            "host": "x.example",
            "reason": "ok, really",
        }
    )
    out = run("admin", "audit", "export", "--format", "json", "--data-dir", str(tmp_path))
    assert [r["kind"] for r in json.loads(out.stdout)] == ["list-update", "review-decision"]
    out = run(
        "admin",
        "audit",
        "export",
        "--format",
        "csv",
        "--kind",
        "review-decision",
        "--data-dir",
        str(tmp_path),
        "-o",
        str(tmp_path / "a.csv"),
    )
    text = (tmp_path / "a.csv").read_text()
    assert text.splitlines()[0] == "time,kind,who,action,subject,category,reason,details"
    assert '"ok, really"' in text and "list-update" not in text
    bad = run(
        "admin", "audit", "export", "--since", "soon", "--data-dir", str(tmp_path), check=False
    )
    assert bad.returncode == 2


def test_admin_serve_alone(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    from tests.dns_resolver.harness import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "filterdns",
            "admin",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                doc = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert doc.json()["servers"][0]["url"] == f"http://127.0.0.1:{port}"
        r = httpx.post(f"http://127.0.0.1:{port}/api/reports", json={"target": "a.example"})
        assert r.status_code == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0

"""schemathesis against the running admin API's /openapi.json: whatever it generates
(valid and invalid input, odd headers, huge values), no endpoint answers 5xx. Run on
SQLite and on PostgreSQL, whose text type rejects what SQLite takes (NUL, surrogates)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.reports.conftest import ApiThread


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis") or shutil.which("st")
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_no_server_errors(
    kind: str,
    make_api: Callable[..., ApiThread],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    database = request.getfixturevalue("postgres").create_database() if kind != "sqlite" else ""
    api = make_api(database, burst=100_000, rate_per_minute=60_000.0)
    token = api.create_token("admin", "schemathesis")
    # Something for the id and host routes to find, besides the 404s.
    rid = httpx.post(f"{api.url}/api/reports", json={"target": "seed.example"}).json()["id"]
    httpx.post(
        f"{api.url}/api/reports/{rid}/decision",
        json={"action": "allow", "reason": "seed"},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()
    result = subprocess.run(
        [
            *_schemathesis(),
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "40",
            "--seed",
            "20261123",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # The API still works and the seeded data is intact afterwards.
    detail = httpx.get(
        f"{api.url}/api/reports/{rid}", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert detail["target"] == "seed.example" and detail["decisions"][0]["reason"] == "seed"

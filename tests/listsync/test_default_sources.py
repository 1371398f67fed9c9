"""The embedded default's UT1 categories by URL, on a first start (no `--config`).

A real `filterdns serve` with no config forwards to the session NSD; its UT1 URLs point at
the loopback HTTP server of conftest.py (`FILTERDNS_UT1_BASE_URL`, for tests only) serving
category archives built here, and its data directory is the test's own `XDG_DATA_HOME`.
The bundled lists answer at once; a download that fails is tried again with back-off and
comes into service without a restart; `--offline` sends no request at all; and with
`FILTERDNS_LOOPBACK_ONLY` (tests/conftest.py) the real UT1 host is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from benchmarks.first_start import ut1_archive
from fdconfig import bundled_lists_file
from tests.dns_resolver.harness import (
    REPO_ROOT,
    DigResult,
    NsdServer,
    TestZone,
    dig,
    eventually,
    free_port,
    wait_for_dns,
)
from tests.listsync.conftest import ListServer

pytestmark = pytest.mark.timeout(180)

CATEGORIES = ("adult", "redirector", "phishing", "malware")
# In the downloaded adult category only: not blocked until the download is in service. (The
# embedded default answers `test.` locally, RFC 6761, so its answer is a plain NXDOMAIN.)
ADULT_ONLY = TestZone.WWW.rstrip(".")
_downloaded = partial(eventually, timeout=60.0)  # a child process downloads and compiles


def bundled_gambling_name() -> str:
    domains = bundled_lists_file().parent / "ut1" / "gambling" / "domains"
    return next(line.strip() for line in domains.read_text().splitlines() if line.strip())


class DefaultServe:
    """`python -m filterdns serve` without a config: the embedded default."""

    def __init__(self, tmp_path: Path, nsd: NsdServer, ut1: ListServer, *flags: str) -> None:
        self.port = free_port()
        self.data_dir = tmp_path / "xdg" / "filterdns"
        self.stderr_path = tmp_path / "serve.stderr"
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(tmp_path / "xdg"),
            "FILTERDNS_UT1_BASE_URL": ut1.url(""),
            "FILTERDNS_RETRY_AFTER": "1",
            "PYTHONUNBUFFERED": "1",
        }
        argv = [
            sys.executable, "-m", "filterdns", "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--upstream", nsd.upstream,
            "--metrics-listen", "",
            *flags,
        ]
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err,
            )
        if not wait_for_dns(self.port, timeout=30.0, is_alive=lambda: self.proc.poll() is None):
            self.stop()
            raise RuntimeError(f"filterdns serve did not answer:\n{self.stderr()}")

    def dig(self, name: str) -> DigResult:
        return dig("127.0.0.1", self.port, name, "A")

    def blocked(self, name: str) -> bool:
        """Blocked by a list: the answer's EDE names the list that decided it."""
        return "list=" in self.dig(name).ede_text

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def serve_default(
    tmp_path: Path, nsd_upstream: NsdServer, list_server: ListServer
) -> Iterator[Callable[..., DefaultServe]]:
    started: list[DefaultServe] = []

    def start(*flags: str) -> DefaultServe:
        server = DefaultServe(tmp_path, nsd_upstream, list_server, *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.stderr()


def serve_categories(ut1: ListServer) -> None:
    ut1.put("/adult.tar.gz", ut1_archive("adult", [ADULT_ONLY, "adult-only.example"]))
    for category in CATEGORIES[1:]:
        ut1.put(f"/{category}.tar.gz", ut1_archive(category, [f"{category}-only.example"]))


def test_first_start_serves_bundled_at_once_and_the_download_after_a_retry(
    serve_default: Callable[..., DefaultServe], list_server: ListServer
) -> None:
    serve_categories(list_server)
    list_server.mode = "error"  # UT1 answers 500 at first
    server = serve_default()
    gambling = bundled_gambling_name()
    assert server.blocked(gambling), "a bundled name must be blocked from the first answer"
    assert not server.blocked(ADULT_ONLY)
    assert _downloaded(lambda: 500 in list_server.statuses("/adult.tar.gz"))
    assert eventually(
        lambda: "ut1-adult: try 1 failed, next try in 1 s" in server.stderr(), timeout=30.0
    )
    assert server.proc.poll() is None, "a failed download is never fatal"

    list_server.mode = "ok"
    assert _downloaded(lambda: server.blocked(ADULT_ONLY)), server.stderr()
    assert server.blocked("adult-only.example") and server.blocked("phishing-only.example")
    assert server.blocked(gambling)
    statuses = list_server.statuses("/adult.tar.gz")
    assert statuses[0] == 500 and statuses[-1] == 200
    log = server.stderr()
    assert "lists in service: bundled: " in log
    assert "ut1-adult, ut1-redirector, ut1-phishing, ut1-malware: downloading" in log
    assert "ut1-adult: downloading " in log
    assert "ut1-adult: 2 names, in service" in log
    # The copy, the snapshot and the audit trail are in the data directory.
    state = server.data_dir
    assert (state / "sources" / "ut1-adult" / "adult.tar.gz").is_file()
    assert (state / "lists.snap").is_file() and (state / "audit.jsonl").is_file()
    assert f"state in {state}; try it: dig @127.0.0.1 -p {server.port} example.com" in log
    # `filterdns check` without options answers as the server does: from its snapshot.
    checked = subprocess.run(
        [sys.executable, "-m", "filterdns", "check", "adult-only.example", gambling],
        cwd=REPO_ROOT, env={**os.environ, "XDG_DATA_HOME": str(state.parent)},
        capture_output=True, text=True, timeout=60,
    )
    assert checked.returncode == 1, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0].startswith("adult-only.example: block (category adult, list ut1-adult/adult")
    assert lines[1].startswith(f"{gambling}: block (category gambling, list ut1-gambling")


def test_offline_sends_no_request(
    serve_default: Callable[..., DefaultServe], list_server: ListServer
) -> None:
    serve_categories(list_server)
    server = serve_default("--offline")
    assert server.blocked(bundled_gambling_name())
    assert eventually(lambda: "lists checked: none changed" in server.stderr(), timeout=30.0)
    server.proc.send_signal(signal.SIGHUP)  # a refresh on request fetches nothing either
    assert eventually(
        lambda: server.stderr().count("lists checked: none changed") >= 2, timeout=30.0
    ), server.stderr()
    assert list_server.requests == []
    assert not server.blocked(ADULT_ONLY)
    assert "ut1-malware: offline: not downloaded" in server.stderr()


def test_the_real_ut1_host_is_refused_under_loopback_only(tmp_path: Path) -> None:
    # No FILTERDNS_UT1_BASE_URL: the default's real UT1 URLs; FILTERDNS_LOOPBACK_ONLY=1
    # comes from tests/conftest.py. Refused before any connection or name lookup.
    env = {k: v for k, v in os.environ.items() if k != "FILTERDNS_UT1_BASE_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    result = subprocess.run(
        [sys.executable, "-m", "filterdns", "lists", "update"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    refused = [line for line in result.stdout.splitlines() if "refused to fetch" in line]
    assert len(refused) == len(CATEGORIES), result.stdout
    assert "refused to fetch from dsi.ut-capitole.fr: not a loopback address" in refused[0]
    assert "FILTERDNS_LOOPBACK_ONLY" in refused[0]

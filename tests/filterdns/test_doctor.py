"""`filterdns doctor`, run as a real process against real peers: the session NSD as the
upstream, a running `filterdns serve` holding its ports, the loopback list server of
tests/listsync/conftest.py for a list given by URL."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dns_resolver.harness import (
    REPO_ROOT,
    NsdServer,
    ServerProcess,
    TestZone,
    free_port,
    to_toml,
    write_test_blocklist,
)
from tests.listsync import conftest as listsync_fixtures
from tests.listsync.conftest import ListServer, domain_list

# Fixtures are found by name in the test module.
list_server = listsync_fixtures.list_server
nsd_upstream = listsync_fixtures.nsd_upstream
start_filterdns = listsync_fixtures.start_filterdns

pytestmark = pytest.mark.timeout(120)
PROBE = TestZone.WWW.rstrip(".")  # NSD answers only its own zone


def doctor(
    *args: str, cwd: Path = REPO_ROOT, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "filterdns", "doctor", "--probe", PROBE, *args]
    if user is not None:
        # An unprivileged user: changing the uid from root drops every capability.
        setpriv = shutil.which("setpriv") or "setpriv"
        argv = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]


def good_config(tmp_path: Path, nsd: NsdServer, ut1: ListServer) -> dict[str, Any]:
    ut1.put("/adult.txt", domain_list(["adult.example", "more.adult.example"]))
    return {
        "server": {
            "data_dir": "state",
            "listen": [f"127.0.0.1:{free_port()}"],
        },
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "upstream": {"servers": [nsd.upstream], "timeout": 1.0},
        "lists": [
            {"path": str(write_test_blocklist(tmp_path)), "name": "test", "category": "adult"},
            {"name": "adult", "url": ut1.url("/adult.txt"), "category": "adult"},
        ],
    }


def test_all_is_well_with_free_ports_and_with_filterdns_holding_them(
    tmp_path: Path,
    nsd_upstream: NsdServer,
    list_server: ListServer,
    start_filterdns: Callable[..., ServerProcess],
) -> None:
    config = good_config(tmp_path, nsd_upstream, list_server)
    path = tmp_path / "doctor.toml"
    path.write_text(to_toml(config))
    updated = subprocess.run(
        [sys.executable, "-m", "filterdns", "lists", "update", "--config", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert updated.returncode == 0, updated.stdout + updated.stderr

    free = doctor("--config", str(path))
    assert free.returncode == 0, free.stdout
    out = free.stdout
    assert f"ok       config: {path} is valid (2 lists, 1 listen addresses, 1 upstreams)" in out
    assert f"ok       listen: {config['server']['listen'][0]} is free" in out
    assert f"ok       upstream: {nsd_upstream.upstream} answers ({PROBE} A: NOERROR" in out
    assert f"ok       data dir: {tmp_path / 'state'} is writable" in out
    assert "ok       snapshot: " in out and "maps (" in out
    assert "ok       lists: 1 local lists" in out
    assert "ok       lists: adult: 2 entries, downloaded " in out
    assert out.rstrip().endswith("all is well")

    server = start_filterdns(config)
    held = doctor("--config", str(server.config_path))
    assert held.returncode == 0, held.stdout
    assert (
        f"ok       listen: {config['server']['listen'][0]} is held by a running filterdns "
        f"(pid {server.pid})" in held.stdout
    )


def test_each_problem_is_one_line_that_says_what_to_do(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: the query is refused
    listen = free_port()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    path = tmp_path / "bad.toml"
    path.write_text(
        to_toml(
            {
                "server": {"listen": [f"127.0.0.1:{listen}"], "data_dir": str(blocker / "state")},
                "metrics": {"listen": ""},
                "upstream": {"servers": [dead], "timeout": 0.5},
            }
        )
    )
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", listen))
    try:
        result = doctor("--config", str(path))
    finally:
        taken.close()
    assert result.returncode == 1, result.stdout
    lines = problems(result)
    assert len(lines) == 3, result.stdout
    assert lines[0].startswith(f"PROBLEM  listen: 127.0.0.1:{listen} is in use (udp) by pid ")
    assert "stop that program or listen elsewhere" in lines[0]
    assert lines[1].startswith(f"PROBLEM  upstream: {dead} did not answer {PROBE} within 0.5 s")
    assert lines[2].startswith(f"PROBLEM  data dir: {blocker / 'state'} is not writable")
    assert "(server.data_dir, --data-dir)" in lines[2]
    assert result.stdout.rstrip().endswith("3 problems")


def test_an_invalid_config_is_the_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[server]\nlisn = ["127.0.0.1:5353"]\n')
    result = doctor("--config", str(path))
    assert result.returncode == 1
    assert problems(result) == [
        f"PROBLEM  config: {path}: server.lisn: unknown key; fix the file and key named"
    ]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="filterdns-doctor-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_port_53_needs_the_capability_when_not_root(
    shared_dir: Path, nsd_upstream: NsdServer
) -> None:
    nobody = 65534
    path = shared_dir / "port53.toml"
    path.write_text(
        to_toml(
            {
                "server": {"listen": ["127.0.0.1:53"], "data_dir": str(shared_dir / "state")},
                "metrics": {"listen": ""},
                "upstream": {"servers": [nsd_upstream.upstream]},
            }
        )
    )
    path.chmod(0o644)
    result = doctor("--config", str(path), cwd=shared_dir, user=nobody)
    assert result.returncode == 1, result.stdout + result.stderr
    assert [line for line in problems(result) if "privileges" in line] == [
        "PROBLEM  privileges: port 53 needs CAP_NET_BIND_SERVICE and this user has neither it "
        "nor root; run under deploy/systemd/filterdns.service (AmbientCapabilities="
        "CAP_NET_BIND_SERVICE) or `sudo setcap cap_net_bind_service=+ep` on the Python binary"
    ]
    assert doctor("--config", str(path)).stdout.count("ok       privileges: port 53") == 1

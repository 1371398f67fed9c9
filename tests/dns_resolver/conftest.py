"""Fixtures for the resolver's integration tests; the machinery lives in harness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.dns_resolver.harness import (
    FaultUpstream,
    NsdServer,
    ServerProcess,
    filterdns_config,
    write_test_blocklist,
)


@pytest.fixture(scope="session")
def nsd_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    """NSD serving `TestZone` on 127.0.0.1, shared by the session. Do not stop it: use
    `fresh_nsd` for a test that stops or restarts its upstream."""
    server = NsdServer(tmp_path_factory.mktemp("nsd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_nsd(tmp_path: Path) -> Iterator[NsdServer]:
    """A running NSD of the test's own, free to `stop()` and `start()` (same port)."""
    server = NsdServer(tmp_path / "nsd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_upstream() -> Iterator[FaultUpstream]:
    """A fault-injecting upstream in mode "ok"; set `.mode` to change its behaviour."""
    server = FaultUpstream()
    yield server
    server.stop()


@pytest.fixture
def make_fault_upstream() -> Iterator[Callable[..., FaultUpstream]]:
    """A factory for more fault upstreams (`make_fault_upstream(mode="timeout")`)."""
    made: list[FaultUpstream] = []

    def make(**kwargs: Any) -> FaultUpstream:
        server = FaultUpstream(**kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def test_blocklist(tmp_path: Path) -> Path:
    """`TestZone.BLOCKLIST` written to tmp_path/block.txt."""
    return write_test_blocklist(tmp_path)


@pytest.fixture
def start_filterdns(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `python -m filterdns serve --config FILE` and wait until it answers.

    Call it as `start_filterdns(config, extra_args=[], upstreams=[...])` with TOML text or a
    dict. Relative paths in the config are relative to tmp_path (where the file is written).
    Free loopback ports fill in `server.listen` and `metrics.listen` unless given. At
    teardown every started server gets SIGTERM and must exit with status 0 within 5 s.
    """
    started: list[ServerProcess] = []

    def start(
        config: str | Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        *,
        upstreams: Sequence[str] = (),
        ready_timeout: float = 10.0,
    ) -> ServerProcess:
        data = filterdns_config(config, upstreams=upstreams)
        server = ServerProcess(
            data, tmp_path, extra_args, ready_timeout, name=f"filterdns-{len(started)}"
        )
        started.append(server)
        return server

    yield start
    failures = []
    for server in started:
        was_running = server.running()
        code = server.stop()
        if was_running and code != 0:
            failures.append(
                f"pid {server.pid}: "
                + ("did not exit within 5 s of SIGTERM" if code is None else f"exit status {code}")
                + f"\nstderr:\n{server.stderr_text()}"
            )
    if failures:
        pytest.fail("filterdns did not shut down cleanly:\n" + "\n".join(failures))


@pytest.fixture
def filterdns_on_nsd(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer, test_blocklist: Path
) -> Callable[..., ServerProcess]:
    """Like `start_filterdns`, with the session NSD as upstream and the test blocklist
    (category "adult", list name "test") loaded unless the config names lists itself."""

    def start(
        config: str | Mapping[str, Any] | None = None, extra_args: Sequence[str] = ()
    ) -> ServerProcess:
        data = filterdns_config(config, upstreams=[nsd_upstream.upstream])
        data.setdefault(
            "lists", [{"path": str(test_blocklist), "name": "test", "category": "adult"}]
        )
        return start_filterdns(data, extra_args)

    return start


@pytest.fixture(scope="session")
def policy_nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    """NSD serving `TestZone` plus the safe-search target zones (`policy_zone.py`)."""
    from tests.dns_resolver.policy_zone import SAFE_SEARCH_ZONES

    server = NsdServer(tmp_path_factory.mktemp("policy-nsd"), extra_zones=SAFE_SEARCH_ZONES)
    server.start()
    yield server
    server.stop()

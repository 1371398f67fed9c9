"""Fixtures for the report queue: a PostgreSQL cluster of the session's own, a database
URL parametrized over SQLite and PostgreSQL, and the admin API running in a thread.

PostgreSQL comes from Debian (`apt-get install postgresql`, done by .ci/run); the cluster
lives in a temporary folder, listens on 127.0.0.1 on a free port only, and is stopped at
teardown. initdb refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fdconfig import Address, AdminConfig, Config, ReportsConfig
from reports.server import AdminServer
from reports.store import Store, data_dir_url
from tests.dns_resolver.conftest import (  # noqa: F401 - fixtures used by the e2e tests
    filterdns_on_nsd,
    nsd_upstream,
    start_filterdns,
    test_blocklist,
)
from tests.dns_resolver.harness import REPO_ROOT, free_port

PG_USER = "filterdns"


def filterdns_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `python -m filterdns ARGS` from the source tree, as a user would (bounded)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "filterdns", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO_ROOT,
        check=check,
    )


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: apt-get install -y postgresql")
    return found[-1]


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with trust authentication."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "pgdata"
        self.socket_dir = base / "pgsock"
        self.port = free_port()
        self.log = base / "pg.log"
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(base, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        subprocess.run(
            _as_pg_user(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.dir),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.start()

    def start(self) -> None:
        """Start the cluster (again: the same port and data, e.g. after `stop()`)."""
        self._ctl(
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log),
            "-o",
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
        )

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.dir), *args]),
            check=True,
            capture_output=True,
            timeout=90,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast", "-w", "-t", "30")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    # Not under pytest's tmp_path: its folders are private to root, and as root the
    # cluster runs as `postgres`, which must reach its own data folder.
    base = Path(tempfile.mkdtemp(prefix="filterdns-pg-"))
    try:
        cluster = PostgresCluster(base)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: the same tests run on both."""
    if request.param == "sqlite":
        return data_dir_url(tmp_path / "data")
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(database_url)
    yield s
    s.close()


class ApiThread:
    """An `AdminServer` on its own event loop in a thread; `url` is its base URL."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = AdminServer(config, data_dir=data_dir, port=0)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        self.url = f"http://127.0.0.1:{self.server.port}"

    @property
    def service(self) -> Any:
        return self.server.service

    def create_token(self, role: str = "reviewer", name: str = "tester") -> str:
        assert self.server.store is not None
        return self.server.store.create_token(role, name)[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def api_config(database: str = "", **reports: Any) -> Config:
    """A config with the admin API on a loopback port of the OS's choice."""
    return replace(
        Config(),
        admin=AdminConfig(enabled=True, listen=Address("127.0.0.1", 0)),
        reports=replace(ReportsConfig(), database=database, **reports),
    )


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., ApiThread]]:
    """Start admin APIs (`make_api(database="", burst=...)`); all stopped at teardown."""
    started: list[ApiThread] = []

    def make(database: str = "", **reports: Any) -> ApiThread:
        api = ApiThread(api_config(database, **reports), tmp_path / f"data{len(started)}")
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()


@pytest.fixture
def api(make_api: Callable[..., ApiThread]) -> ApiThread:
    """The admin API on SQLite with a generous rate limit."""
    return make_api(burst=1000, rate_per_minute=6000.0)

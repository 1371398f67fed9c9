"""The fixtures the subscriber tests share with the report queue's: PostgreSQL, a database
URL over SQLite and PostgreSQL, and `filterdns serve` on NSD."""

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dns_resolver.harness import NsdServer, ServerProcess
from tests.reports.conftest import (  # noqa: F401 - fixtures
    database_url,
    filterdns_on_nsd,
    nsd_upstream,
    postgres,
    start_filterdns,
    test_blocklist,
)


@pytest.fixture
def serve(
    start_filterdns: Callable[..., ServerProcess],  # noqa: F811 - the fixture above
    nsd_upstream: NsdServer,  # noqa: F811
    test_blocklist: Path,  # noqa: F811
) -> Callable[[dict], ServerProcess]:
    """Start `filterdns serve` with `config`, NSD as upstream and the test blocklist."""

    def start(config: dict) -> ServerProcess:
        config["lists"] = [{"path": str(test_blocklist), "name": "test", "category": "adult"}]
        # Migrations, the table, maybe forking workers: slower to answer on a busy machine.
        return start_filterdns(config, upstreams=[nsd_upstream.upstream], ready_timeout=40)

    return start

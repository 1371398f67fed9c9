"""The fixtures the subscriber tests share with the report queue's: PostgreSQL, a database
URL over SQLite and PostgreSQL, and `filterdns serve` on NSD."""

from tests.reports.conftest import (  # noqa: F401 - fixtures
    database_url,
    filterdns_on_nsd,
    nsd_upstream,
    postgres,
    start_filterdns,
    test_blocklist,
)

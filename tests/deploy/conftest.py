"""The resolver's fixtures (NSD upstream, filterdns processes), shared with the deploy tests."""

from tests.dns_resolver.conftest import (  # noqa: F401 - fixtures are found by name
    fault_upstream,
    filterdns_on_nsd,
    nsd_upstream,
    start_filterdns,
    test_blocklist,
)

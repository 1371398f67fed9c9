"""The whole file (`ConfigTable`, what the JSON Schema describes) and the whole loaded
configuration (`Config`, what the server reads)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import msgspec

from fdconfig.access import AccessConfig, AccessTable
from fdconfig.admin import AdminConfig, AdminTable
from fdconfig.blocking import BlockingConfig, BlockingTable
from fdconfig.blockpage import BlockPageConfig, BlockPageTable
from fdconfig.cache import CacheConfig, CacheTable
from fdconfig.console import ConsoleConfig, ConsoleTable
from fdconfig.dnstap import DnstapConfig, DnstapTable
from fdconfig.fields import Table, doc
from fdconfig.forward import ForwardConfig, ForwardTable
from fdconfig.leads import LeadsConfig, LeadsTable
from fdconfig.lists import ListConfig, ListTable
from fdconfig.local import LocalConfig, LocalTable
from fdconfig.log import LoggingConfig, LoggingTable
from fdconfig.metrics import MetricsConfig, MetricsTable
from fdconfig.observed import ObservedConfig, ObservedTable
from fdconfig.policies import ClientsTable, PoliciesConfig, PolicyTable
from fdconfig.querylog import QueryLogConfig, QueryLogTable
from fdconfig.ratelimit import RateLimitConfig, RateLimitTable
from fdconfig.reports import ReportsConfig, ReportsTable
from fdconfig.server import ServerConfig, ServerTable
from fdconfig.subscribers import RadiusConfig, RadiusTable, SubscribersConfig, SubscribersTable
from fdconfig.tls import TlsConfig, TlsTable
from fdconfig.upstream import UpstreamConfig, UpstreamTable
from filtercore.listspec import ListSpec


class ConfigTable(Table):
    """The configuration file of `filterdns serve` (docs/configuration.md). Every key is
    optional; unknown keys are errors."""

    server: ServerTable = msgspec.field(default_factory=ServerTable)
    upstream: UpstreamTable = msgspec.field(default_factory=UpstreamTable)
    cache: CacheTable = msgspec.field(default_factory=CacheTable)
    blocking: BlockingTable = msgspec.field(default_factory=BlockingTable)
    access: AccessTable = msgspec.field(default_factory=AccessTable)
    metrics: MetricsTable = msgspec.field(default_factory=MetricsTable)
    querylog: QueryLogTable = msgspec.field(default_factory=QueryLogTable)
    logging: LoggingTable = msgspec.field(default_factory=LoggingTable)
    admin: AdminTable = msgspec.field(default_factory=AdminTable)
    reports: ReportsTable = msgspec.field(default_factory=ReportsTable)
    lists: Annotated[
        tuple[ListTable, ...],
        doc(
            "The lists to filter with (`[[lists]]`). A config file without `[[lists]]` "
            "filters nothing (the bundled lists are used only when there is no config file)."
        ),
    ] = ()
    clients: ClientsTable = msgspec.field(default_factory=ClientsTable)
    policies: Annotated[
        dict[str, PolicyTable],
        doc(
            "Per-client policies (`[policies.NAME]`). Without them every list blocks for "
            "every client."
        ),
    ] = {}
    blockpage: BlockPageTable = msgspec.field(default_factory=BlockPageTable)
    forward: Annotated[
        tuple[ForwardTable, ...],
        doc("Forwarding rules (`[[forward]]`): domains whose queries go to other servers."),
    ] = ()
    local: LocalTable = msgspec.field(default_factory=LocalTable)
    ratelimit: RateLimitTable = msgspec.field(default_factory=RateLimitTable)
    dnstap: DnstapTable = msgspec.field(default_factory=DnstapTable)
    observed: ObservedTable = msgspec.field(default_factory=ObservedTable)
    leads: LeadsTable = msgspec.field(default_factory=LeadsTable)
    console: ConsoleTable = msgspec.field(default_factory=ConsoleTable)
    subscribers: SubscribersTable = msgspec.field(default_factory=SubscribersTable)
    radius: RadiusTable = msgspec.field(default_factory=RadiusTable)
    tls: TlsTable = msgspec.field(default_factory=TlsTable)


@dataclass(frozen=True)
class Config:
    """The whole configuration. `source` is the file it came from (None for the default)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    blocking: BlockingConfig = field(default_factory=BlockingConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    querylog: QueryLogConfig = field(default_factory=QueryLogConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    lists: tuple[ListConfig, ...] = ()
    policy: PoliciesConfig = field(default_factory=PoliciesConfig)
    blockpage: BlockPageConfig = field(default_factory=BlockPageConfig)
    forward: tuple[ForwardConfig, ...] = ()
    local: LocalConfig = field(default_factory=LocalConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    dnstap: DnstapConfig = field(default_factory=DnstapConfig)
    observed: ObservedConfig = field(default_factory=ObservedConfig)
    leads: LeadsConfig = field(default_factory=LeadsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    subscribers: SubscribersConfig = field(default_factory=SubscribersConfig)
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    source: str | None = None

    def list_specs(self, entries: Iterable[ListConfig] | None = None) -> list[ListSpec]:
        """The lists to compile (`entries`, default all), in configuration order.

        A list that a policy names (`lists = [...]`) and that has no category of its own
        gets its name as its category, so the policy can block exactly that list. Both the
        in-process compile and the snapshot (listsync) use this, so they agree.
        """
        specs = [entry.to_spec() for entry in (self.lists if entries is None else entries)]
        named = {name for p in self.policy.policies for name in p.lists}
        if not named:
            return specs
        return [
            replace(spec, category=spec.display_name) if _own_category(spec, named) else spec
            for spec in specs
        ]


def _own_category(spec: ListSpec, named: set[str]) -> bool:
    """A single list file a policy names, without a category: trees keep their folders'."""
    path = Path(spec.path)
    return (
        spec.category is None
        and spec.display_name in named
        and spec.format != "ut1"
        and path.is_file()
        and not path.name.endswith((".tar.gz", ".tgz"))
    )

"""What the console reads from the resolver's process: the overview's aggregates and the
query-log store, both fed by the query log's writer thread (`QueryLog.sinks`)."""

from __future__ import annotations

from typing import Any

from dns_resolver.querystats import QueryStats
from dns_resolver.querystore import QueryStore
from fdconfig import Config


class ConsoleFeed:
    """The console's data for one config: `stats` always, `store` when `[console] store`."""

    def __init__(self, config: Config) -> None:
        c = config.console
        self.querylog: Any = None
        self.stats = QueryStats()
        self.store: QueryStore | None = (
            QueryStore(
                c.store_dir,
                retention_days=c.retention_days,
                max_bytes=c.max_bytes,
                max_rows=c.max_rows,
            )
            if c.store
            else None
        )

    def attach(self, querylog: Any, resolver: Any) -> None:
        """Take rows from `querylog`'s writer; fill in the rule of blocks answered in C
        from `resolver`'s lists (C says a name is blocked, not by which rule)."""
        if getattr(resolver, "policies", None) is not None:
            querylog.describe_client = lambda client, category: describe_client(
                resolver.policies, client, category
            )
        self.querylog = querylog
        querylog.sinks.append(self.stats.add)
        if self.store is not None:
            self.store.explain = lambda name: resolver.matcher.check(name)
            querylog.sinks.append(self.store.add)

    def counters(self) -> dict[str, Any]:
        """Rows written and dropped: the log's queue when the writer falls behind, the
        store when the disk fails. Dropped rows are counted, never waited for."""
        out: dict[str, Any] = {}
        if self.querylog is not None:
            out["querylog_written"] = self.querylog.written
            out["querylog_dropped"] = self.querylog.dropped
        if self.store is not None:
            out.update({f"store_{k}": v for k, v in self.store.stats().items()})
        return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# Selection.via -> the console's words for it (querystore.CLIENT_WHY). ClientIDs of
# encrypted transports and subscribers will add theirs.
_VIA = {"client-id": "edns-client-id", "ecs": "cidr", "address": "cidr", "default": "default"}


def describe_client(table: Any, client: str, category: str | None) -> tuple[str, str, str | None]:
    """(policy, why the client has it, the schedule/allowance note on `category`) for a
    query's source address. From the address only: a policy chosen by an EDNS option is
    not seen here, the writer does not have the query's options."""
    selection = table.select(client)
    policy = selection.policy
    note = policy.notes.get(category) if category else None
    return policy.name, _VIA.get(selection.via, selection.via), note

"""What the console reads from the resolver's process: the overview's aggregates and the
query-log store, both fed by the query log's writer thread (`QueryLog.sinks`).

With several workers (`dns_resolver.workershare`) each worker keeps its own aggregates and
writes its own store folder (`store_dir/worker-N`: no writer waits on another's SQLite
lock and no row crosses a process); the console's worker merges the others' published
aggregates with its own, and a search reads every worker's folder.
"""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path
from typing import Any

from dns_resolver.observability.querystats import QueryStats, StatsGroup
from dns_resolver.observability.querystore import WORKER_PREFIX, QueryStore
from dns_resolver.workershare import PUBLISH_INTERVAL, WorkerShare
from fdconfig import Config

log = logging.getLogger(__name__)


class ConsoleFeed:
    """The console's data for one config: `stats` always, `store` when `[console] store`.

    `share`: this worker's `WorkerShare` when there are several (None: one process)."""

    def __init__(self, config: Config, share: WorkerShare | None = None) -> None:
        c = config.console
        self.querylog: Any = None
        self.share = share
        self.own = QueryStats()
        self.stats: QueryStats | StatsGroup = self.own
        folder, parts = Path(c.store_dir), 1
        if share is not None:
            folder = folder / f"{WORKER_PREFIX}{share.index}"
            parts = config.server.workers  # the limits are the store's, over all workers
        self.store: QueryStore | None = (
            QueryStore(
                folder,
                retention_days=c.retention_days,
                max_bytes=c.max_bytes // parts,
                max_rows=c.max_rows // parts,
            )
            if c.store
            else None
        )
        self._publisher: threading.Thread | None = None
        self._stop = threading.Event()
        if share is not None and share.serves_console:
            self.stats = StatsGroup(self.own, self._peer_stats)
        elif share is not None:
            self._publisher = threading.Thread(
                target=self._publish_loop, name="console-publish", daemon=True
            )
            self._publisher.start()

    def attach(self, querylog: Any, resolver: Any) -> None:
        """Take rows from `querylog`'s writer; fill in the rule of blocks answered in C
        from `resolver`'s lists (C says a name is blocked, not by which rule)."""
        if getattr(resolver, "policies", None) is not None:
            querylog.describe_client = lambda client, category: describe_client(
                resolver.policies, client, category
            )
        self.querylog = querylog
        querylog.sinks.append(self.own.add)
        if self.store is not None:
            self.store.explain = lambda name: resolver.matcher.check(name)
            querylog.sinks.append(self.store.add)

    def counters(self) -> dict[str, Any]:
        """Rows written and dropped: the log's queue when the writer falls behind, the
        store when the disk fails. Dropped rows are counted, never waited for. Added up
        over the workers."""
        out = self._own_counters()
        if self.share is not None and self.share.serves_console:
            for peer in self.share.peers():
                for key, value in peer["counters"].items():
                    if key in _SUMMED:
                        out[key] = out.get(key, 0) + value
        return out

    def _own_counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.querylog is not None:
            out["querylog_written"] = self.querylog.written
            out["querylog_dropped"] = self.querylog.dropped
        if self.store is not None:
            out.update({f"store_{k}": v for k, v in self.store.stats().items()})
        return out

    def _peer_stats(self) -> list[QueryStats]:
        assert self.share is not None
        return [QueryStats.from_state(peer["stats"]) for peer in self.share.peers()]

    def _publish_loop(self) -> None:
        """Publish this worker's aggregates when they changed, at most once a second: the
        console's worker reads them at most that late, whatever the query rate."""
        assert self.share is not None
        published = -1
        while not self._stop.wait(PUBLISH_INTERVAL):
            if self.own.changes == published:
                continue
            published = self.own.changes
            payload = {"stats": self.own.state(), "counters": self._own_counters()}
            try:
                self.share.publish(pickle.dumps(payload, protocol=5))
            except OSError as exc:  # the supervisor's folder gone: it is stopping
                log.debug("cannot publish the console's aggregates: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join()
        if self.store is not None:
            self.store.close()


# Counters that add up over workers (`store_days` is per folder: the console's own).
_SUMMED = ("querylog_written", "querylog_dropped", "store_written", "store_dropped",
           "store_rows")  # fmt: skip


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

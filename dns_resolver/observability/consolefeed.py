"""What the console reads from the resolver's process: the overview's aggregates and the
query-log store, both made by the query log's writer process (`querywriter.py`).

The serving process only hands the query log's rows over (`WriterLink`); its writer
process counts them (`QueryStats`), stores them (`QueryStore`) and publishes its
aggregates to a file at most every `querywriter.PUBLISH_INTERVAL`, which the console reads
here (re-read only when it changed). With several workers (`dns_resolver.workershare`)
each worker has its writer, which writes its own store folder (`store_dir/worker-N`: no
writer waits on another's SQLite lock) and publishes to the supervisor's folder; the
console's worker merges every writer's aggregates at read time, and a search reads every
worker's folder. A writer started again (it died, its worker was restarted, or the
lists or policies changed) starts from the aggregates published last, so no count starts
from zero.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily

from dns_resolver.observability.querystats import QueryStats, StatsGroup
from dns_resolver.observability.querystore import WORKER_PREFIX, QueryStore
from dns_resolver.observability.querywriter import WriterLink
from dns_resolver.workershare import WorkerShare
from fdconfig import Config

log = logging.getLogger(__name__)

STATE = "stats.pickle"  # a single process's writer's aggregates, in a private folder
UPSTREAMS_INTERVAL = 1.0


def upstream_health(resolver: Any) -> list[dict[str, Any]]:
    """This process's default upstreams: name, healthy, failures in a row."""
    forwarder = getattr(resolver, "forwarder", None)
    if forwarder is None:
        return []
    now = time.monotonic()
    return [
        {"name": u.name, "healthy": u.alive(now), "failures": u.failures}
        for u in forwarder.upstreams
    ]


class ConsoleFeed:
    """The console's data for one config: `stats` always, `store` when `[console] store`,
    and `link`, the query log that hands the rows to the writer process.

    `share`: this worker's `WorkerShare` when there are several (None: one process)."""

    def __init__(self, config: Config, share: WorkerShare | None = None) -> None:
        c = config.console
        self.share = share
        self.config = config
        self._private: Path | None = None
        if share is not None:
            state = share.stats_file()
        else:
            self._private = Path(tempfile.mkdtemp(prefix="filterdns-console-"))
            state = self._private / STATE
        self._state = state
        folder, self._parts = Path(c.store_dir), 1
        if share is not None:
            folder = folder / f"{WORKER_PREFIX}{share.index}"
            self._parts = config.server.workers  # the limits are the store's, over all workers
        self._folder = folder
        # Read here (searches); written by the writer process only.
        self.store: QueryStore | None = QueryStore(folder) if c.store else None
        self.link = WriterLink(config, state, folder, self._parts)
        self._own: tuple[int, Any] = (-1, None)  # (mtime_ns, payload) of our writer's file
        self._own_lock = threading.Lock()  # the admin API reads from worker threads
        self.stats = StatsGroup(QueryStats(), self._published_stats)
        self.resolver: Any = None
        self._publisher: threading.Thread | None = None  # other workers: upstream health
        self._stop = threading.Event()

    def attach(self, querylog: Any, resolver: Any) -> None:
        """Start handing `querylog`'s rows (this feed's `link`, or one `relink` made) to
        the writer, which describes them with `resolver`'s policies and lists."""
        querylog.start(resolver)
        self.resolver = resolver
        share = self.share
        if share is not None and not share.serves_console and self._publisher is None:
            self._publisher = threading.Thread(
                target=self._publish_upstreams, name="console-upstreams", daemon=True
            )
            self._publisher.start()

    def upstreams(self) -> list[dict[str, Any]]:
        """The upstreams' health as the overview shows it: with several workers, healthy
        when every worker finds it so, and the failures in a row added up."""
        merged = {u["name"]: dict(u) for u in upstream_health(self.resolver)}
        if self.share is not None and self.share.serves_console:
            for peer in self.share.peer_upstreams():
                for u in peer:
                    found = merged.setdefault(u["name"], {**u, "failures": 0})
                    found["healthy"] = found["healthy"] and u["healthy"]
                    found["failures"] += u["failures"]
        return list(merged.values())

    def _publish_upstreams(self) -> None:
        """Publish this worker's upstreams' health when it changed, once a second."""
        assert self.share is not None
        published = None
        while not self._stop.wait(UPSTREAMS_INTERVAL):
            health = upstream_health(self.resolver)
            if health == published:
                continue
            try:
                self.share.publish_upstreams(health)
                published = health
            except OSError as exc:  # the supervisor's folder gone: it is stopping
                log.debug("cannot publish the upstreams' health: %s", exc)

    def relink(self, config: Config) -> WriterLink:
        """A link for a new `[querylog]` (a configuration reload); its writer starts once
        the current link's has finished."""
        link = WriterLink(config, self._state, self._folder, self._parts)
        link.after = self.link
        self.link = link
        return link

    def _published(self) -> dict[str, Any] | None:
        """What our writer published last (re-read only when the file changed)."""
        with self._own_lock:
            try:
                mtime = self._state.stat().st_mtime_ns
                if mtime != self._own[0]:
                    self._own = (mtime, pickle.loads(self._state.read_bytes()))
            except (OSError, pickle.UnpicklingError, EOFError) as exc:
                log.debug("the query-log writer's aggregates are unreadable: %s", exc)
            return self._own[1]

    def _published_stats(self) -> list[QueryStats]:
        payloads = [self._published()]
        if self.share is not None and self.share.serves_console:
            payloads += self.share.peers()
        return [QueryStats.from_state(p["stats"]) for p in payloads if p is not None]

    def counters(self) -> dict[str, Any]:
        """Rows written and dropped: at the hand-over when the writer falls behind, in the
        writer's queue, in the store when the disk fails. Dropped rows are counted, never
        waited for. Added up over the workers."""
        own = self._published()
        out: dict[str, Any] = dict(own["counters"]) if own is not None else {}
        if self.share is not None and self.share.serves_console:
            for peer in self.share.peers():
                for key, value in peer["counters"].items():
                    if key in _SUMMED:
                        out[key] = out.get(key, 0) + value
        return out

    def collect(self) -> Iterator[CounterMetricFamily]:
        """`filterdns_console_rows_written_total` and
        `filterdns_console_rows_dropped_total{stage}` for this process's rows (the
        Prometheus registry's collector protocol)."""
        own = self._published()
        counters = own["counters"] if own is not None else {}
        written = "store_written" if self.store is not None else "querylog_written"
        yield CounterMetricFamily(
            "filterdns_console_rows_written",
            "Query-log rows the console's writer process has made (counted, stored).",
            value=counters.get(written, 0),
        )
        family = CounterMetricFamily(
            "filterdns_console_rows_dropped",
            "Query-log rows the console lost: at the hand-over to the writer process (it "
            "was behind), in its queue, or in the store (the disk failed).",
            labels=["stage"],
        )
        family.add_metric(["handover"], self.link.dropped)
        family.add_metric(["writer"], counters.get("querylog_dropped", 0))
        family.add_metric(["store"], counters.get("store_dropped", 0))
        yield family

    def close(self) -> None:
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join()
        if self._private is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._private)


# Counters that add up over workers (`store_days` is per folder: the console's own).
_SUMMED = ("querylog_written", "querylog_dropped", "store_written", "store_dropped",
           "store_rows", "handover_dropped")  # fmt: skip


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

"""The subscriber service: the store, the serving table it keeps current, and the view of
that table the resolver asks (Python) and maps (C).

One process writes the table (`SubscriberService`, in the process that serves the admin API
and RADIUS); it tails the store's change log on a thread: woken at once by a local change,
by PostgreSQL's NOTIFY for another node's change, or by its poll interval. A node that
loses the database keeps its table and resyncs fully when the database is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dns_resolver.fast._subtable import DROPPED, SubscriberTable, capacity_for
from subscribers.addresses import table_key
from subscribers.allowances import SubscriberAllowances
from subscribers.store import CHANNEL, Change, SubscriberStore

log = logging.getLogger(__name__)

TABLE_FILE = "subscribers.table"
OWN_LISTS_MEMO = 4096


def table_path(config: Any, data_dir: str | os.PathLike[str]) -> str:
    """`subscribers.table_path`, else `<data_dir>/subscribers.table`."""
    return config.subscribers.table_path or str(Path(data_dir) / TABLE_FILE)


class SubscriberService:
    """Owns the serving table at `path` and keeps it equal to the store's mapping.

    Args:
        store: the subscribers' database.
        path: the table file.
        policies: the configured policy names, in index order.
        poll_interval: seconds between looks at the change log (NOTIFY wakes earlier).
    """

    def __init__(
        self,
        store: SubscriberStore,
        path: str,
        policies: Sequence[str],
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.path = path
        self.index = {name: i for i, name in enumerate(policies)}
        self.poll_interval = poll_interval
        self.seq = 0
        self.table: SubscriberTable | None = None
        self.applied = 0  # changes applied from the log (metrics, tests)
        self.resyncs = 0
        self.db_errors = 0
        self.db_ok = True
        # apply/build on the tailing thread and reindex (a config reload) write the table
        self._lock = threading.RLock()
        self._rebuild = False  # a reload added a policy: its subscribers need a full build
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the table -------------------------------------------------------------------------

    def _entry(self, address: str, policy: str | None, lists_id: int | None) -> tuple | None:
        index = self.index.get(policy) if policy is not None else None
        if index is None:
            return None  # unmapped, or a policy this node's config does not have
        plen, key = table_key(address)
        return plen, key, index, lists_id or 0

    def build(self) -> None:
        """A full build from the store (start-up, a gap in the log, a reconnect)."""
        seq, rows = self.store.mapping()
        with self._lock:
            entries = [e for a, p, lists in rows if (e := self._entry(a, p, lists)) is not None]
            # A new file renamed over the old one: readers see `retired` on the old one.
            table = SubscriberTable.create(self.path, capacity_for(len(entries)), entries)
            if self.table is not None:
                self.table.retire()
            self.table = table
            self.seq = seq
            self.resyncs += 1
        log.info("subscribers: %d addresses in the serving table", table.count)

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply log rows to the table, in order."""
        with self._lock:
            table = self.table
            assert table is not None
            for change in changes:
                entry = self._entry(change.address, change.policy, change.lists_id)
                if entry is None:
                    plen, key = table_key(change.address)
                    table.remove(plen, key)
                else:
                    table = table.set(*entry)
                self.seq = change.seq
            self.table = table
            self.applied += len(changes)

    def reindex(self, policies: Sequence[str]) -> None:
        """The configured policies changed (a reload): renumber the table's entries in
        place at once, so no address is served another policy's index. Entries of a
        removed policy are unmapped; a policy that is new may have subscribers the table
        does not hold yet: they come with a full build on the tailing thread."""
        index = {name: i for i, name in enumerate(policies)}
        with self._lock:
            if index == self.index:
                return
            old = sorted(self.index, key=self.index.__getitem__)
            if self.table is not None:
                self.table.remap([index.get(name, DROPPED) for name in old])
                for plen, key, policy, _lists in self.table.entries():
                    if policy == DROPPED:
                        self.table.remove(plen, key)
            added = set(index) - set(self.index)
            self.index = index
        log.info("subscribers: the policies changed; the serving table renumbered")
        if added and self._threads:
            self._rebuild = True
            self._wake.set()

    def catch_up(self) -> int:
        """Apply what the log has after our position; how many changes."""
        total = 0
        while True:
            changes = self.store.changes_since(self.seq)
            if not changes:
                return total
            if changes[0].seq > self.seq + 1 and self.store.first_seq() > self.seq + 1:
                self.build()  # the log was pruned past us
                continue
            self.apply(changes)
            total += len(changes)

    # -- the thread --------------------------------------------------------------------------

    def start(self, build: bool = True) -> None:
        """Build the table (unless done already), then keep it current from a thread (and
        listen on PostgreSQL)."""
        if build:
            self.build()
        worker = threading.Thread(target=self._run, name="subscribers", daemon=True)
        self._threads.append(worker)
        if self.store.postgres:
            listener = threading.Thread(target=self._listen, name="subscribers-listen", daemon=True)
            self._threads.append(listener)
        for thread in self._threads:
            thread.start()

    def kick(self) -> None:
        """Look at the log now (after a local change)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _run(self) -> None:
        resync = False
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            try:
                if resync or self._rebuild:
                    self._rebuild = False
                    self.build()
                    resync = False
                self.catch_up()
                if not self.db_ok:
                    log.warning("subscribers: the database is back")
                self.db_ok = True
            except Exception as exc:
                self.db_errors += 1
                if self.db_ok:
                    log.warning(
                        "subscribers: the database is unreachable (%s); the table stays as it is",
                        str(exc).splitlines()[0],
                    )
                self.db_ok = False
                resync = True  # whatever happened meanwhile: rebuild once it is back
                self._stop.wait(self.poll_interval)

    def _listen(self) -> None:
        """LISTEN for other nodes' changes; reconnect (and resync) after a failure."""
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # anything missed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except Exception:  # the database is away: try again shortly
                self._stop.wait(1.0)


class SubscriberView:
    """What the resolver asks: the subscriber of a client address (policy index, own
    lists). Maps the table read-only; used in every serving process."""

    def __init__(self, path: str, store: SubscriberStore) -> None:
        self.path = path
        self.store = store
        self.table: SubscriberTable = SubscriberTable.open(path)
        self._lists: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
        # Daily allowances of subscribers, counted per subscriber id in the store.
        self.allowances = SubscriberAllowances(store)

    def close(self) -> None:
        """Write the allowance minutes still pending."""
        self.allowances.close()

    def current(self) -> SubscriberTable:
        """The table, mapped again when the writer replaced the file."""
        if self.table.retired:
            self.table = SubscriberTable.open(self.path)
        return self.table

    def lookup(self, client: str) -> tuple[int, int] | None:
        """(policy index, own-lists id) of the subscriber holding `client`, or None."""
        host = client.split("%", 1)[0]
        try:
            packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            return None
        if len(packed) == 16 and packed[:12] == b"\0" * 10 + b"\xff\xff":
            packed = packed[12:]  # v4-mapped: the IPv4 client
        return self.current().lookup(packed)

    def own_lists(self, lists_id: int) -> tuple[frozenset[str], frozenset[str]]:
        """(allow, block) of own-lists id `lists_id` (ids never change meaning: memoised)."""
        found = self._lists.get(lists_id)
        if found is None:
            found = self.store.own_lists(lists_id)
            if len(self._lists) >= OWN_LISTS_MEMO:
                self._lists.clear()
            self._lists[lists_id] = found
        return found

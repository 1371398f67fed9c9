"""Daily allowances of subscribers: minutes counted per subscriber id in the subscribers'
database (SQLite or PostgreSQL), so a subscriber's devices share one allowance on every
node, worker and address (docs/subscribers.md#daily-allowances).

The hot path never waits for the database. `use` looks up in-process dicts under a lock,
as `dns_resolver.steps.allowance.AllowanceStore` does for clients that are not subscribers; a
background thread (every `flush_interval`, 1 s) does the database work in a few batched
statements:

- it learns which subscriber holds the addresses asked about (one query for all new
  addresses; an address is asked again after `id_ttl`, 60 s). Until then a minute is kept
  under the address and moved to the subscriber once known;
- it writes the pending minutes (a minute another node or worker wrote counts once);
- it reads back the minutes of the subscribers active here in the last
  `ACTIVE_MINUTES`, whichever node counted them (the others keep their last counts).

How stale a count may be: a minute used on another node is seen here within both nodes'
rounds (about 2 s), so each node may grant at most one minute beyond the allowance (a
minute once granted lasts to its end). The same holds for an address's first query here
(counted before its subscriber is known, within 1 s) and for a subscriber back after
`ACTIVE_MINUTES` idle here (checked against the count it had then, refreshed at the next
round). An address that moves to another subscriber is counted to its previous holder
for up to `id_ttl`. When the database is away the minutes wait in memory (bounded:
`MAX_PENDING` keys) and the counts stay as last read.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (local day, subscriber id or "@" + address, category)

ACTIVE_MINUTES = 10  # subscribers whose counts are read back: active here this recently
KEEP_DAYS = 3
MAX_IDS = 100_000  # addresses whose subscriber is remembered
MAX_PENDING = 100_000
PRUNE_EVERY = 3600.0


class SubscriberAllowances:
    """Used allowance minutes per (day, subscriber, category) in the subscribers' store.

    Args:
        store: a `subscribers.store.SubscriberStore`.
        flush_interval: seconds between the background thread's rounds.
        id_ttl: seconds an address's subscriber is trusted before it is asked again.
        clock: monotonic time (tests).
    """

    def __init__(
        self,
        store: Any,
        *,
        flush_interval: float = 1.0,
        id_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.id_ttl = id_ttl
        self.clock = clock
        self.flushes = 0  # rounds that reached the database (metrics, tests)
        self.failures = 0
        self._lock = threading.Lock()
        self._ids: dict[str, tuple[str | None, float]] = {}  # address -> (id, when asked)
        self._asking: set[str] = set()  # addresses to ask about at the next round
        self._known: dict[Key, int] = {}  # minutes in the database
        self._pending: dict[Key, set[int]] = {}  # minutes of this process, not yet written
        self._last: dict[Key, int] = {}  # the last minute this process counted per key
        self._active: dict[str, int] = {}  # subscriber id -> the last minute it used here
        self._pruned = -PRUNE_EVERY
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="subscriber-allowances", daemon=True
        )
        self._thread.start()

    # -- the hot path ---------------------------------------------------------------------

    def _who(self, address: str) -> str:
        """The subscriber id of `address` as last learned, else "@address" (asked soon)."""
        known = self._ids.get(address)
        if known is None or self.clock() - known[1] >= self.id_ttl:
            self._asking.add(address)
        if known is not None and known[0] is not None:
            return known[0]  # possibly stale: asked again in the background
        return "@" + address

    def use(
        self, day: str, client: str, category: str, minute: int, limit: int
    ) -> tuple[bool, int]:
        """Count `minute` for the subscriber holding address `client` if its allowance
        allows it; (allowed, minutes used today). As `AllowanceStore.use`."""
        with self._lock:
            who = self._who(client)
            key = (day, who, category)
            pending = self._pending.get(key)
            used = self._known.get(key, 0) + (len(pending) if pending else 0)
            if who[0] != "@":
                self._active[who] = minute
            if self._last.get(key) == minute:
                return True, used
            if used >= limit:
                return False, used
            if pending is None:
                if len(self._pending) >= MAX_PENDING:
                    return True, used  # the database is long away: grant, do not grow
                pending = self._pending[key] = set()
            pending.add(minute)
            self._last[key] = minute
            return True, used + 1

    def used(self, day: str, client: str, category: str) -> int:
        """Minutes the subscriber holding `client` used today, as far as known here."""
        with self._lock:
            key = (day, self._who(client), category)
            return self._known.get(key, 0) + len(self._pending.get(key, ()))

    # -- background -----------------------------------------------------------------------

    def _run(self) -> None:
        reachable = True
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception as exc:  # the database is away: keep counting in memory
                self.failures += 1
                if reachable:  # once per outage, not every second
                    log.warning("subscriber allowances: cannot reach the database: %s",
                                str(exc).splitlines()[0])
                reachable = False
            else:
                if not reachable:
                    log.warning("subscriber allowances: the database is back")
                reachable = True

    def _holder(self, address: str) -> tuple[bool, str | None]:
        """(asked, subscriber id) of an address whose minutes wait under it."""
        if address in self._asking:
            return False, None
        return True, self._ids.get(address, (None, 0.0))[0]

    def _rekey(self) -> None:
        """Move minutes kept under an address to the subscriber now known to hold it
        (under the lock). Minutes of an address nobody holds any more are dropped."""
        for key in [k for k in self._pending if k[1][0] == "@"]:
            asked, sid = self._holder(key[1][1:])
            if asked:
                minutes = self._pending.pop(key)
                if sid is not None:
                    self._pending.setdefault((key[0], sid, key[2]), set()).update(minutes)
        for key in [k for k in self._last if k[1][0] == "@"]:
            asked, sid = self._holder(key[1][1:])
            if asked:
                minute = self._last.pop(key)
                if sid is not None:
                    new = (key[0], sid, key[2])
                    self._last[new] = max(self._last.get(new, minute), minute)

    def flush(self) -> None:
        """One round: learn new addresses' subscribers, write pending minutes, read back
        the active subscribers' counts."""
        with self._lock:
            asking, self._asking = self._asking, set()
        try:
            found = self.store.holders(sorted(asking)) if asking else {}
        except Exception:
            with self._lock:
                self._asking |= asking
            raise
        now = self.clock()
        with self._lock:
            if len(self._ids) + len(asking) > MAX_IDS:
                self._ids.clear()
            for address in asking:
                self._ids[address] = (found.get(address), now)
            self._rekey()
            pending = {k: m for k, m in self._pending.items() if k[1][0] != "@"}
            for key in pending:
                del self._pending[key]
            current = max(self._active.values(), default=0)
            self._active = {
                sid: m for sid, m in self._active.items() if m > current - ACTIVE_MINUTES
            }
            for key in pending:
                self._active.setdefault(key[1], current)
            active = sorted(self._active)
        rows = [(d, sid, cat, m) for (d, sid, cat), minutes in pending.items() for m in minutes]
        since = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
        try:
            if rows:
                self.store.add_minutes(rows)
            counts = self.store.minutes(active, since) if active else {}
        except Exception:
            with self._lock:  # put them back for the next round
                for key, minutes in pending.items():
                    self._pending.setdefault(key, set()).update(minutes)
            raise
        with self._lock:
            # Subscribers idle here keep their last counts (refreshed when they are back):
            # forgetting them would give a spent allowance a fresh minute on each return.
            if len(self._known) > MAX_IDS:
                self._known = {}
            self._known = {k: n for k, n in self._known.items() if k[0] >= since}
            self._known.update(counts)
            # A minute written now is in `counts`; what was counted meanwhile stays pending.
            for key, minutes in self._pending.items():
                minutes.difference_update(pending.get(key, ()))
            self._last = {k: m for k, m in self._last.items() if k[0] >= since}
        self.flushes += 1
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            before = (datetime.date.today() - datetime.timedelta(days=KEEP_DAYS)).isoformat()
            self.store.prune_minutes(before)

    def collect(self) -> Iterator[Any]:
        """Prometheus: the background rounds, by outcome (added up over workers)."""
        rounds = CounterMetricFamily(
            "filterdns_subscriber_allowance_rounds",
            "Rounds of writing and reading back subscribers' allowance minutes, by result.",
            labels=["result"],
        )
        rounds.add_metric(["ok"], self.flushes)
        rounds.add_metric(["failed"], self.failures)
        yield rounds

    def close(self) -> None:
        """Stop the thread and write what is pending."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception as exc:
            log.warning("subscriber allowances: final write failed: %s", exc)


__all__ = ["SubscriberAllowances"]

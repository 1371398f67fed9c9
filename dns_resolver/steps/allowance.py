"""Daily allowances: N minutes a day per client per category, shared by worker processes.

A minute is "used" when the client queried at least one name of the category during it
(anti-addiction rules count time of play, and DNS sees time of use as minutes with
lookups). Once the allowance is spent the category is blocked until the next local day.

Storage and cost. The minutes live in SQLite (`allowances.sqlite` in the data directory,
WAL mode, so every worker process reads and writes the same file and a restart resumes
the day). The hot path never touches the file: `AllowanceStore.use` looks up an
in-process dict, and only the first query of a client in a new minute adds one entry to a
pending set (a lock, a dict and a set operation: well under a microsecond). A background
thread writes the pending minutes once a second (`INSERT OR IGNORE`, so two workers that
saw the same minute count it once) and reads back the per-client counts of every worker.
The price of this is that several workers may together overrun an allowance by up to one
flush interval's worth of minutes (at most a minute or two), which is acceptable for a
limit counted in minutes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (local day, client, category)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS used_minutes (
    day TEXT NOT NULL,
    client TEXT NOT NULL,
    category TEXT NOT NULL,
    minute INTEGER NOT NULL,
    PRIMARY KEY (day, client, category, minute)
) WITHOUT ROWID
"""

KEEP_DAYS = 3


class AllowanceStore:
    """Per-day used minutes per (client, category), persisted in SQLite.

    Args:
        path: the database file (created with its folder).
        flush_interval: seconds between background writes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._known: dict[Key, int] = {}  # minutes in the database (all workers)
        self._pending: dict[Key, set[int]] = {}  # minutes of this process, not yet written
        self._last: dict[Key, int] = {}  # the last minute this process counted per key
        self._db = self._connect()
        self._load()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="allowance-flusher", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        db.commit()
        return db

    def _load(self) -> None:
        rows = self._db.execute(
            "SELECT day, client, category, COUNT(*) FROM used_minutes "
            "GROUP BY day, client, category"
        ).fetchall()
        with self._lock:
            self._known = {(d, c, cat): n for d, c, cat, n in rows}

    # -- the hot path ---------------------------------------------------------------------

    def use(
        self, day: str, client: str, category: str, minute: int, limit: int
    ) -> tuple[bool, int]:
        """Count `minute` for the client if the allowance allows it.

        Returns (allowed, minutes used today). A minute already counted is always allowed
        (the last minute of an allowance lasts to its end); a new minute is counted while
        fewer than `limit` minutes are used, else refused.
        """
        key = (day, client, category)
        with self._lock:
            pending = self._pending.get(key)
            used = self._known.get(key, 0) + (len(pending) if pending else 0)
            if self._last.get(key) == minute:
                return True, used
            if used >= limit:
                return False, used
            if pending is None:
                pending = self._pending[key] = set()
            pending.add(minute)
            self._last[key] = minute
            return True, used + 1

    def used(self, day: str, client: str, category: str) -> int:
        """Minutes used today as far as this process knows."""
        key = (day, client, category)
        with self._lock:
            return self._known.get(key, 0) + len(self._pending.get(key, ()))

    # -- background -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except sqlite3.Error as exc:
                # A locked or full disk must not stop the resolver: keep the minutes in
                # memory and try again at the next interval.
                log.warning("allowance store: cannot write %s: %s", self.path, exc)

    def flush(self) -> None:
        """Write pending minutes and read back every worker's counts."""
        with self._lock:
            pending, self._pending = self._pending, {}
        rows = [(d, c, cat, m) for (d, c, cat), minutes in pending.items() for m in minutes]
        try:
            with self._db:
                if rows:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO used_minutes VALUES (?, ?, ?, ?)", rows
                    )
                days = sorted({key[0] for key in self._known} | {key[0] for key in pending})
                if len(days) > KEEP_DAYS:  # old days are never asked for again
                    self._db.execute("DELETE FROM used_minutes WHERE day < ?", (days[-KEEP_DAYS],))
                counts = self._db.execute(
                    "SELECT day, client, category, COUNT(*) FROM used_minutes "
                    "GROUP BY day, client, category"
                ).fetchall()
        except sqlite3.Error:
            with self._lock:  # put them back for the next attempt
                for key, minutes in pending.items():
                    self._pending.setdefault(key, set()).update(minutes)
            raise
        with self._lock:
            self._known = {(d, c, cat): n for d, c, cat, n in counts}
            # Minutes recorded while the database was being written stay pending; a
            # minute another worker also wrote is counted once by COUNT(*) next time.
            for key, minutes in self._pending.items():
                minutes.difference_update(pending.get(key, ()))

    def close(self) -> None:
        """Stop the flusher and write what is pending."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.warning("allowance store: final write to %s failed: %s", self.path, exc)
        self._db.close()


__all__ = ["AllowanceStore"]

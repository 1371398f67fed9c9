"""The console's query-log store: every answered query as a searchable SQLite row.

Written by the query log's writer thread (`QueryLog.sinks`), never on the query path, with
the same anonymised clients. SQLite files in `DIR/`, each a part of a UTC day of at most
`PART_ROWS` rows (`2026-12-04.0001.sqlite`, `.0002`, ...; a whole day in
`2026-12-04.sqlite` from earlier versions): retention drops whole files, the oldest
first, when they are older than `retention_days` or when the files together pass
`max_bytes` or `max_rows`, so nothing ever runs a large DELETE. The part being written
has no index; it gets its indexes (time, client, name) in one pass when it is full or
its day ends. A search walks the parts newest first and stops once it has `limit` rows,
so a typical search reads the newest part of the log only. Rows are appended in time
order, so "newest first" is the table read backwards, with no sort. A name search first
scans a sealed part's distinct names (a small table), then reads the rows of the few
that match by index; the open part is scanned backwards.

Each row says why it got its answer: category, list, the rule as written, the policy, why
the client has it (`CLIENT_WHY`), the schedule window or allowance note, the step that
decided (`DECIDED_BY`; the CNAME target or answer address for an inspection), whether it
was cached, the upstream that answered and its latency, and the response time.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COLUMNS = (
    "ts", "client", "qname", "qtype", "protocol", "result", "rcode", "category", "list",
    "rule", "policy", "client_why", "why", "decided_by", "cached", "upstream", "latency_ms",
    "upstream_ms",
)  # fmt: skip
CLIENT_WHY = ("clientid", "edns-client-id", "subscriber", "cidr", "default")
"""Why a client gets its policy: a ClientID of an encrypted transport, a client id in an
EDNS option (MAC, CPE), a subscriber, its network (`clients` CIDRs, or ECS), or none."""
DECIDED_BY = (
    "list", "override", "subscriber-list", "schedule=WINDOW", "block-now",
    "allowance=CATEGORY:...", "pause", "cname=NAME", "address=IP", "safe-search", "bypass",
    "local", "cache", "stale-cache", "upstream", "upstream-failed", "ratelimit", "acl",
    "parser", "rfc8482",
)  # fmt: skip
"""What a row's `decided_by` says: a list rule (allow or block), a reviewer's override, a
subscriber's own list, the policy's schedule window, block-now, spent allowance or pause,
an answer inspection (the CNAME target or address it matched), safe search, a bypass
canary, a local record, the cache (or its stale copy), the upstream's answer (nothing
listed the name) or its failure, the rate limit, the access list, an unparsable query or
RFC 8482's answer to ANY."""
Row = tuple[Any, ...]
"""One query, its values in `COLUMNS` order."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS q ({", ".join(COLUMNS)});
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS q_ts ON q(ts);
CREATE INDEX IF NOT EXISTS q_client ON q(client, ts);
CREATE INDEX IF NOT EXISTS q_qname ON q(qname);
INSERT OR IGNORE INTO names SELECT DISTINCT qname FROM q WHERE qname IS NOT NULL;
"""
PART_ROWS = 250_000
"""Rows of a part file before the next one is begun. The part being written has no index
(each indexed row cost ~3x an unindexed one: a B-tree insert per index at a random
place); its indexes are built in one pass, by sorting, when it is full or its day ends.
A search reads the open part by a backwards scan, which this bound keeps short; its
table of distinct names (for name searches) is filled then too."""
NAMES_IN = 1000
"""A name search matching at most this many distinct names of a day reads their rows by
index; more (a common substring) scans the day backwards, which finds `limit` rows soon."""
_INSERT = f"INSERT INTO q VALUES ({', '.join('?' * len(COLUMNS))})"
SUFFIX = ".sqlite"
WORKER_PREFIX = "worker-"
"""A worker's own folder in the store's (`consolefeed.py`)."""


@dataclass(frozen=True)
class Search:
    """A query-log search; every field is optional but `limit`."""

    name: str | None = None  # substring of the name
    client: str | None = None  # as stored (anonymised)
    result: str | None = None
    category: str | None = None
    policy: str | None = None
    since: float | None = None  # UNIX time, inclusive
    until: float | None = None  # UNIX time, exclusive
    limit: int = 100


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class QueryStore:
    """Day files of query rows in `directory`, bounded by age, size and rows."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retention_days: int = 7,
        max_bytes: int = 2 * 1024**3,
        max_rows: int = 10_000_000,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.written = 0
        self.dropped = 0
        # Filled in by the writer for rows whose producer could not say (the C fast path
        # knows a name is blocked, not by which rule): name -> Verdict-like or None.
        self.explain: Callable[[str], Any] | None = None
        self._part = ""  # the part being written, and its connection
        self._conn: sqlite3.Connection | None = None
        self._rows: dict[str, int] = {}  # part -> rows, counted once per file then kept
        self._lock = threading.Lock()  # add() and prune() from the writer, close() from stop
        self._error_reported = False

    # -- writing (the query log's writer thread) --

    def _connect(self, part: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.dir / f"{part}{SUFFIX}", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # A crash may lose the last second of rows, never corrupt a part: enough for a log.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MB: sorting for the indexes
        conn.executescript(_SCHEMA)
        have = {column for _, column, *_ in conn.execute("PRAGMA table_info(q)")}
        for column in COLUMNS:
            if column not in have:  # a file of an earlier version
                conn.execute(f"ALTER TABLE q ADD COLUMN {column}")
        return conn

    def _writing(self, day: str) -> sqlite3.Connection:
        """The connection to write `day`'s rows to: the open part while it has room, else
        a new part (the one before it sealed). After a restart an unsealed part of the day
        is carried on, and other unsealed ones (a crash) are sealed."""
        conn = self._conn
        if conn is not None and self._part[:10] == day and self._rows[self._part] < PART_ROWS:
            return conn
        if conn is not None:
            _seal(conn)
            conn.close()
            self._conn = None
        first = not self._rows
        parts = [p for p in self.parts() if p[:10] == day]
        part = parts[-1] if parts and len(parts[-1]) > 10 else f"{day}.0000"
        conn = self._connect(part)
        if part not in self._rows:
            self._rows[part] = conn.execute("SELECT count(*) FROM q").fetchone()[0]
        if self._rows[part] >= PART_ROWS or _sealed(conn):
            _seal(conn)
            conn.close()
            part = f"{day}.{int(part[11:]) + 1:04d}"
            conn = self._connect(part)
            self._rows[part] = 0
        if first:
            for other in self.parts():
                if other != part:
                    with contextlib.closing(self._connect(other)) as old:
                        _seal(old)
                        # Counted once, so that `max_rows` holds across restarts.
                        self._rows[other] = old.execute("SELECT count(*) FROM q").fetchone()[0]
        self._conn, self._part = conn, part
        return conn

    def add(self, rows: Sequence[Row]) -> None:
        """Store a batch (one transaction per day touched); a failure drops and counts."""
        if not rows:
            return
        with self._lock:
            try:
                self._add(rows)
            except (sqlite3.Error, OSError) as exc:
                self.dropped += len(rows)
                if not self._error_reported:
                    self._error_reported = True
                    log.warning("query-log store %s: cannot write (%s); dropping", self.dir, exc)

    def _add(self, rows: Sequence[Row]) -> None:
        explain = self.explain
        if explain is not None:
            rows = [_explained(row, explain) for row in rows]
        first = day_of(min(map(_get_ts, rows)))
        if first == day_of(max(map(_get_ts, rows))):
            by_day = {first: rows}  # the usual batch: no day per row
        else:
            by_day = {}
            for row in rows:
                by_day.setdefault(day_of(row[0]), []).append(row)
        parts = len(self._rows)
        for day, batch in sorted(by_day.items()):
            conn = self._writing(day)
            with conn:
                conn.executemany(_INSERT, batch)
            self._rows[self._part] += len(batch)
            self.written += len(batch)
        if len(self._rows) != parts or sum(self._rows.values()) > self.max_rows:
            self._prune()

    def prune(self) -> None:
        """Drop the day files past the retention limits (also done as days begin)."""
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        parts = self.parts()
        oldest_kept = day_of(time.time() - self.retention_days * 86400)
        sizes = {p: _size(self.dir / f"{p}{SUFFIX}") for p in parts}
        for part in parts[:-1]:  # never the newest
            if part == self._part:
                break  # being written
            over_rows = sum(self._rows.get(p, 0) for p in sizes) > self.max_rows
            over_bytes = sum(sizes.values()) > self.max_bytes
            if part[:10] >= oldest_kept and not over_rows and not over_bytes:
                break
            for extra in ("", "-wal", "-shm"):
                (self.dir / f"{part}{SUFFIX}{extra}").unlink(missing_ok=True)
            sizes.pop(part)
            self._rows.pop(part, None)
            log.info("query-log store: dropped %s (retention)", part)

    def parts(self, folder: Path | None = None) -> list[str]:
        """The stored parts (of this store's folder, or `folder`), oldest first."""
        folder = self.dir if folder is None else folder
        return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}"))

    def days(self) -> list[str]:
        """The days stored, oldest first."""
        return sorted({part[:10] for part in self.parts()})

    def folders(self) -> list[Path]:
        """Every folder a search reads: the store's root and each worker's folder in it
        (`worker-N`, with `server.workers` > 1), whichever this process writes."""
        root = self.dir.parent if self.dir.name.startswith(WORKER_PREFIX) else self.dir
        return [root, *sorted(p for p in root.glob(f"{WORKER_PREFIX}*") if p.is_dir())]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # unsealed: the next start carries it on or seals it
                self._conn = None

    # -- reading (the admin API, any thread) --

    def search(self, s: Search) -> list[dict[str, Any]]:
        """Rows matching `s`, newest first, at most `s.limit`, from every worker's folder
        (each read newest first up to `limit`, then the newest of them all kept)."""
        found = [self._search_folder(folder, s) for folder in self.folders()]
        if len(found) == 1:
            return found[0]
        merged = heapq.merge(*found, key=lambda row: row["ts"], reverse=True)
        return list(itertools.islice(merged, s.limit))

    def _search_folder(self, folder: Path, s: Search) -> list[dict[str, Any]]:
        where, args = [], []
        for column in ("client", "result", "category", "policy"):
            value = getattr(s, column)
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if s.since is not None:
            where.append("ts >= ?")
            args.append(s.since)
        if s.until is not None:
            where.append("ts < ?")
            args.append(s.until)
        out: list[dict[str, Any]] = []
        for part in reversed(self.parts(folder)):
            if s.until is not None and part[:10] > day_of(s.until):
                continue
            if s.since is not None and part[:10] < day_of(s.since):
                break
            try:
                conn = sqlite3.connect(f"file:{folder / (part + SUFFIX)}?mode=ro", uri=True)
            except sqlite3.OperationalError:
                continue  # dropped by retention meanwhile
            try:
                out.extend(self._search_day(conn, s, where, args, s.limit - len(out)))
            except sqlite3.OperationalError:
                continue  # a file just created, its tables not there yet
            finally:
                conn.close()
            if len(out) >= s.limit:
                break
        return out

    @staticmethod
    def _search_day(
        conn: sqlite3.Connection, s: Search, where: list[str], args: list[Any], limit: int
    ) -> list[dict[str, Any]]:
        where, args = list(where), list(args)
        if s.name and not _sealed(conn):  # the part being written: read backwards
            where.append("instr(qname, ?) > 0")
            args.append(s.name.lower())
        elif s.name:
            needle = s.name.lower()
            names = [
                n for (n,) in conn.execute(
                    "SELECT name FROM names WHERE instr(name, ?) > 0 LIMIT ?",
                    (needle, NAMES_IN + 1),
                )
            ]  # fmt: skip
            if not names:
                return []
            if len(names) <= NAMES_IN:
                where.append(f"qname IN ({', '.join('?' * len(names))})")
                args.extend(names)
            else:
                where.append("instr(qname, ?) > 0")
                args.append(needle)
        sql = f"SELECT {', '.join(COLUMNS)} FROM q"
        if where:
            sql += " WHERE " + " AND ".join(where)
        # Rows are appended in time order, so newest-first is the table read backwards:
        # no sort, and a scan stops after `limit` matches.
        sql += " ORDER BY rowid DESC LIMIT ?"
        return [dict(zip(COLUMNS, row, strict=True)) for row in conn.execute(sql, (*args, limit))]

    def stats(self) -> dict[str, Any]:
        return {
            "days": len(self.days()),
            "rows": sum(self._rows.values()),
            "written": self.written,
            "dropped": self.dropped,
        }


def _sealed(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'q_qname'").fetchone() is not None


def _seal(conn: sqlite3.Connection) -> None:
    """Build a part's indexes and its table of distinct names (once)."""
    if not _sealed(conn):
        conn.executescript(_INDEXES)


_get_ts = itemgetter(0)


def _size(path: Path) -> int:
    total = 0
    for extra in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{extra}").st_size
    return total


_RULE = COLUMNS.index("rule")
_LIST = COLUMNS.index("list")
_CATEGORY = COLUMNS.index("category")
_RESULT = COLUMNS.index("result")


def _explained(row: Row, explain: Callable[[str], Any]) -> Row:
    """`row` with the rule, list and category filled in for a block that lacks them."""
    if row[_RULE] is not None or row[_RESULT] != "blocked":
        return row
    verdict = explain(row[2])
    if verdict is None or not getattr(verdict, "rule", None):
        return row
    values = list(row)
    values[_RULE] = verdict.rule
    values[_LIST] = values[_LIST] or verdict.list
    values[_CATEGORY] = values[_CATEGORY] or verdict.category
    return tuple(values)

"""The audit trail: an append-only JSON-lines log of every change to the lists in force.

One JSON object a line, in `<data_dir>/audit.jsonl`. Every record has `kind` and `time`
(UTC, ISO 8601); the rest depends on the kind:

- `"list-update"` (written by `listsync.update`): `source`, `url`, `result` (`applied`,
  `rejected` or `unchanged`), `reason`, `old` and `new` versions (`etag`, `sha256`,
  `entries`), `added` and `removed` entry counts.
- later kinds (e.g. `"review-decision"` for reviewed reports and appeals) append to the
  same file through the same `AuditLog.append`, so one file tells the whole story.

Each record is written with one `write()` on a file opened `O_APPEND` and fsync'd before
`append` returns: records of concurrent writers (the resolver's reloader, a `filterdns lists
update` run by hand) never interleave, and an acknowledged record survives a crash. A line
torn by a crash mid-write is skipped by `read`, never fatal, and the next record starts
on a line of its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LIST_UPDATE = "list-update"
REVIEW_DECISION = "review-decision"


def utc_now() -> str:
    """The current time as audit records write it: UTC, ISO 8601, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: str | float | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class AuditLog:
    """Append to and read an audit log file (created with its folder on first append)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record durably; `kind` is required, `time` is filled in when missing.

        Returns the record as written.

        Raises:
            ValueError: the record has no `kind`.
            OSError: the log cannot be written (the caller decides whether that is fatal).
        """
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`append` for several records with one write and one fsync (a burst of RADIUS
        changes), in order. Raises as `append`, writing none of them on a bad record."""
        if not all(record.get("kind") for record in records):
            raise ValueError("an audit record needs a kind")
        now = utc_now()
        written = [{"time": now, **record} for record in records]
        line = "".join(
            json.dumps(w, separators=(",", ":"), sort_keys=False) + "\n" for w in written
        ).encode()
        if not line:
            return written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A line torn by a crash: end it, so this record starts a line of its own.
                    line = b"\n" + line
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        return written

    def read(
        self, since: str | float | datetime | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """The records in file order, optionally only those at or after `since` (an ISO
        time, a Unix time or a datetime) and of one `kind`."""
        return list(self.iter(since=since, kind=kind))

    def iter(
        self, since: str | float | datetime | None = None, kind: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """`read`, one record at a time (the log only grows; this does not load it whole)."""
        start = _parse_time(since) if since is not None else None
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    when = _parse_time(record["time"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: skipping a malformed audit record", self.path, number)
                    continue
                if start is not None and when < start:
                    continue
                if kind is not None and record.get("kind") != kind:
                    continue
                yield record

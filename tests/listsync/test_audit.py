"""The audit trail: append-only JSON lines, durable, readable by time and kind."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listsync.audit import REVIEW_DECISION, AuditLog


def test_append_and_read_back(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    assert log.read() == []
    first = log.append({"kind": "list-update", "source": "a", "result": "applied"})
    log.append({"kind": REVIEW_DECISION, "report": 7, "decision": "unblock"})
    assert first["time"].endswith("Z")
    records = log.read()
    assert [r["kind"] for r in records] == ["list-update", REVIEW_DECISION]
    assert records[0] == first
    assert log.read(kind=REVIEW_DECISION)[0]["decision"] == "unblock"
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["list-update", REVIEW_DECISION]


def test_read_since(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"kind": "list-update", "time": "2026-01-01T00:00:00.000Z", "n": 1})
    log.append({"kind": "list-update", "time": "2026-03-01T00:00:00.000Z", "n": 2})
    assert [r["n"] for r in log.read(since="2026-02-01T00:00:00Z")] == [2]
    assert [r["n"] for r in log.read(since=datetime(2025, 12, 1, tzinfo=UTC))] == [1, 2]
    later = (datetime.now(UTC) + timedelta(days=1)).timestamp()
    assert log.read(since=later) == []


def test_a_torn_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"kind": "list-update", "n": 1})
    with path.open("a") as handle:
        handle.write('{"kind": "list-upd')  # a crash mid-write
    log.append({"kind": "list-update", "n": 2})
    # The torn line is skipped; the record after it starts a new line and is kept.
    assert [r.get("n") for r in log.read()] == [1, 2]


def test_a_record_needs_a_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "audit.jsonl").append({"source": "x"})


def test_append_many_writes_a_burst_in_order_or_nothing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"kind": "list-update", "n": 0})
    written = log.append_many([{"kind": "subscriber", "n": i} for i in range(1, 4)])
    assert [r["n"] for r in log.read()] == [0, 1, 2, 3]
    assert log.read()[1:] == written
    with pytest.raises(ValueError):
        log.append_many([{"kind": "subscriber", "n": 4}, {"n": 5}])
    assert len(log.read()) == 4
    assert log.append_many([]) == []


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    padding = "x" * 5000

    def writer(tag: int) -> None:
        for i in range(50):
            AuditLog(log.path).append({"kind": "list-update", "tag": tag, "i": i, "pad": padding})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    records = log.read()
    assert len(records) == 200
    for tag in range(4):
        assert [r["i"] for r in records if r["tag"] == tag] == list(range(50))

"""The query log: JSON lines, anonymised clients, size-bounded rotation, flushed on close."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dns_resolver.observability.querylog import QueryLog, anonymize_client
from fdconfig import QueryLogConfig
from filtercore.verdict import Action, Verdict


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.168.1.77", "192.168.1.0"),
        ("10.0.0.255", "10.0.0.0"),
        ("2001:db8:1234:5678::9", "2001:db8:1234::"),
        ("::ffff:192.0.2.44", "192.0.2.0"),
        ("fe80::1%eth0", "fe80::"),
        ("not-an-ip", None),
    ],
)
def test_truncate(address: str, expected: str | None) -> None:
    assert anonymize_client(address, "truncate") == expected


def test_hash_is_keyed_and_stable_within_a_key() -> None:
    a = anonymize_client("192.0.2.1", "hash", b"k" * 16)
    assert a == anonymize_client("192.0.2.1", "hash", b"k" * 16)
    assert a != anonymize_client("192.0.2.2", "hash", b"k" * 16)
    assert a != anonymize_client("192.0.2.1", "hash", b"j" * 16)
    assert a is not None and "192" not in a and len(a) == 16
    assert anonymize_client("192.0.2.1", "none") == "192.0.2.1"
    with pytest.raises(ValueError):
        anonymize_client("192.0.2.1", "rot13")


def test_entries_are_json_lines_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "q.log"
    qlog = QueryLog(path)
    verdict = Verdict(Action.BLOCK, category="adult", list="ut1")
    qlog.log("192.0.2.77", "bad.example", 1, "udp", "blocked", 0.00125, verdict=verdict, rcode=3,
             timestamp=1_700_000_000.5)  # fmt: skip
    qlog.log("2001:db8::7", "ok.example", 65, "tcp", "allowed", 0.01, rcode=0)
    qlog.close()
    first, second = lines(path)
    assert first == {
        "timestamp": "2023-11-14T22:13:20.500Z",
        "client": "192.0.2.0",
        "qname": "bad.example",
        "qtype": "A",
        "protocol": "udp",
        "result": "blocked",
        "category": "adult",
        "list": "ut1",
        "rcode": "NXDOMAIN",
        "duration_ms": 1.25,
    }
    assert second["client"] == "2001:db8::"
    assert second["qtype"] == "HTTPS" and second["rcode"] == "NOERROR"
    assert second["category"] is None and second["list"] is None


def test_hash_mode_uses_a_fresh_key_per_start(tmp_path: Path) -> None:
    clients = []
    for i in range(2):
        qlog = QueryLog(tmp_path / f"{i}.log", anonymize="hash")
        qlog.log("192.0.2.1", "a.example", 1, "udp", "allowed", 0.001)
        qlog.log("192.0.2.1", "b.example", 1, "udp", "allowed", 0.001)
        qlog.close()
        got = [e["client"] for e in lines(tmp_path / f"{i}.log")]
        assert got[0] == got[1]  # the same client links up within one run
        clients.append(got[0])
    assert clients[0] != clients[1]


def test_rotation_keeps_one_backup_within_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "q.log"
    qlog = QueryLog(path, max_bytes=4096)
    for i in range(200):
        qlog.log("192.0.2.1", f"name{i}.example", 1, "udp", "allowed", 0.001)
    qlog.close()
    backup = tmp_path / "q.log.1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.log", "q.log.1"]
    assert path.stat().st_size <= 4096 and backup.stat().st_size <= 4096
    names = [e["qname"] for e in lines(backup) + lines(path)]
    # The newest entries survive, in order, ending with the last one.
    assert names[-1] == "name199.example"
    assert names == [f"name{i}.example" for i in range(200 - len(names), 200)]


def test_writes_happen_off_the_caller_and_are_flushed_periodically(tmp_path: Path) -> None:
    path = tmp_path / "q.log"
    qlog = QueryLog(path, flush_interval=0.05)
    try:
        qlog.log("192.0.2.1", "a.example", 1, "udp", "allowed", 0.001)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not path.read_text():
            time.sleep(0.02)
        assert lines(path)[0]["qname"] == "a.example"
    finally:
        qlog.close()
    qlog.log("192.0.2.1", "late.example", 1, "udp", "allowed", 0.001)  # after close: ignored
    assert len(lines(path)) == 1


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    qlog = QueryLog(tmp_path / "q.log", flush_interval=60, queue_limit=10)
    for _ in range(15):
        qlog.log("192.0.2.1", "a.example", 1, "udp", "allowed", 0.001)
    assert qlog.dropped == 5
    qlog.close()
    assert len(lines(tmp_path / "q.log")) == 10


def test_from_config(tmp_path: Path) -> None:
    assert QueryLog.from_config(QueryLogConfig()) is None
    cfg = QueryLogConfig(enabled=True, path=str(tmp_path / "sub" / "q.log"), anonymize="none")
    qlog = QueryLog.from_config(cfg)
    assert qlog is not None
    qlog.log("192.0.2.1", "a.example", 28, "udp", "cached", 0.0)
    qlog.close()
    assert lines(tmp_path / "sub" / "q.log")[0]["client"] == "192.0.2.1"

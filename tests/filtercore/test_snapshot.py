"""Snapshot files: a round trip gives the same verdicts; damage is caught, never used."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from filtercore import ListSpec, Matcher
from filtercore.snapshot import SNAPSHOT_VERSION, SnapshotError, load_snapshot, write_snapshot

UT1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "ut1"


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory) -> Matcher:
    tmp = tmp_path_factory.mktemp("lists")
    digest = hashlib.sha256(b"hidden.example").hexdigest()
    (tmp / "hotline.sha256").write_text(digest + "\n")
    (tmp / "kw").write_text("casino$label\n")
    return Matcher.from_lists(
        [
            ListSpec(str(UT1), name="ut1"),
            ListSpec(str(tmp / "hotline.sha256"), category="adult", format="sha256-domains"),
            ListSpec(str(tmp / "kw"), category="gambling", format="keywords"),
        ]
    )


def _targets() -> list[str]:
    names = []
    for category in ("gambling", "drogue", "sexual_education", "doh"):
        lines = (UT1 / category / "domains").read_text().split()
        names += [f"www.{n}" for n in lines[:50]]
    return names + ["x.hidden.example", "casino.test", "nothing.example", "1.2.3.4"]


def test_a_round_trip_gives_the_same_verdicts(matcher: Matcher, tmp_path: Path) -> None:
    path = tmp_path / "lists.snap"
    matcher.save_snapshot(str(path), meta={"sources": ["ut1"]})
    loaded = Matcher.from_snapshot(str(path), verify=True)
    names = _targets()
    assert loaded.check_many(names) == matcher.check_many(names)
    assert loaded.check("x.hidden.example").blocked
    assert loaded.check("casino.test").blocked
    assert loaded.stats() == matcher.stats()
    url = "http://" + (UT1 / "adult" / "urls").read_text().split()[0]
    assert loaded.check_url(url) == matcher.check_url(url)
    assert loaded.compiled.snapshot_meta["sources"] == ["ut1"]
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lists.snap"]
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def _write(matcher: Matcher, tmp_path: Path) -> Path:
    return write_snapshot(matcher.compiled, tmp_path / "s.snap")


def test_a_damaged_payload_is_caught_when_verifying(matcher: Matcher, tmp_path: Path) -> None:
    path = _write(matcher, tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x40
    path.write_bytes(data)
    with pytest.raises(SnapshotError, match="payload checksum"):
        load_snapshot(path, verify=True)


def test_a_damaged_header_is_always_caught(matcher: Matcher, tmp_path: Path) -> None:
    path = _write(matcher, tmp_path)
    data = bytearray(path.read_bytes())
    data[80] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(SnapshotError, match="header checksum"):
        load_snapshot(path)


def test_truncation_is_caught(matcher: Matcher, tmp_path: Path) -> None:
    path = _write(matcher, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64])
    with pytest.raises(SnapshotError, match="truncated"):
        load_snapshot(path)
    path.write_bytes(data[:10])
    with pytest.raises(SnapshotError, match="too short"):
        load_snapshot(path)


def test_other_files_and_versions_are_refused(matcher: Matcher, tmp_path: Path) -> None:
    path = _write(matcher, tmp_path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, SNAPSHOT_VERSION + 1)
    path.write_bytes(data)
    with pytest.raises(SnapshotError, match="format version"):
        load_snapshot(path)
    (tmp_path / "text").write_text("example.com\n" * 10)
    with pytest.raises(SnapshotError, match="bad magic"):
        load_snapshot(tmp_path / "text")
    with pytest.raises(SnapshotError, match="No such file"):
        load_snapshot(tmp_path / "missing.snap")


def test_an_empty_matcher_round_trips(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    m = Matcher.from_lists([ListSpec(str(empty), category="adult")])
    path = tmp_path / "e.snap"
    m.save_snapshot(str(path))
    assert Matcher.from_snapshot(str(path), verify=True).check("example.com").action.value == "none"
    assert os.path.getsize(path) > 64

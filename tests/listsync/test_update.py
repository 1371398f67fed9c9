"""Fetching, validating, caching, auditing and compiling list sources over real HTTP."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from fdconfig import load_config
from filtercore import ListSpec, Matcher
from filtercore.snapshot import load_snapshot
from listsync.audit import AuditLog
from listsync.update import (
    FALLBACK,
    FETCHED,
    NOT_MODIFIED,
    REJECTED,
    UNAVAILABLE,
    UNCHANGED,
    diff_source,
    snapshot_is_current,
    update_sources,
)
from tests.listsync.conftest import (
    ListServer,
    domain_list,
    load,
    names,
    url_list,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

UT1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "ut1"  # beside the checkout


def setup(tmp_path: Path, server: ListServer, path: str = "/adult.txt", **keys: object):
    config_file = write_config(tmp_path, url_list(server.url(path), "adult", **keys))
    return load(config_file), tmp_path / "state"


def audit(data_dir: Path, kind: str = "list-update") -> list[dict]:
    return AuditLog(data_dir / "audit.jsonl").read(kind=kind)


def test_first_fetch_caches_compiles_and_audits(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(100)))
    config, data_dir = setup(tmp_path, list_server)
    report = update_sources(config)
    [result] = report.sources
    assert result.status == FETCHED and result.result == "applied"
    assert result.entries == 100 and result.added == 100 and result.removed == 0
    body = data_dir / "sources" / "adult" / "adult.txt"
    assert body.read_bytes() == list_server.files["/adult.txt"].data
    assert report.compiled and report.snapshot == data_dir / "lists.snap"
    matcher = Matcher.from_snapshot(str(report.snapshot), verify=True)
    verdict = matcher.check("www.site7.example")
    assert verdict.blocked and verdict.category == "adult" and verdict.list == "adult"
    [record] = audit(data_dir)
    assert record["source"] == "adult" and record["result"] == "applied"
    assert record["old"] is None and record["new"]["entries"] == 100
    assert record["new"]["etag"] == list_server.files["/adult.txt"].etag
    assert len(record["new"]["sha256"]) == 64 and record["added"] == 100
    assert [r["kind"] for r in AuditLog(data_dir / "audit.jsonl").read()] == [
        "list-update",
        "snapshot",
    ]


def test_etag_gives_304_and_no_download_or_rebuild(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(50)))
    config, data_dir = setup(tmp_path, list_server)
    update_sources(config)
    snap = data_dir / "lists.snap"
    built = snap.stat().st_mtime_ns
    report = update_sources(config)
    assert [r.status for r in report.sources] == [NOT_MODIFIED]
    assert not report.compiled and snap.stat().st_mtime_ns == built
    last = list_server.requests[-1]
    assert last.status == 304 and last.if_none_match == list_server.files["/adult.txt"].etag
    assert audit(data_dir)[-1]["result"] == "unchanged"
    assert audit(data_dir)[-1]["status"] == NOT_MODIFIED


def test_last_modified_gives_304_without_etags(tmp_path: Path, list_server: ListServer) -> None:
    list_server.etags = False
    list_server.put("/adult.txt", domain_list(names(50)))
    config, _ = setup(tmp_path, list_server)
    update_sources(config)
    report = update_sources(config)
    assert report.sources[0].status == NOT_MODIFIED
    last = list_server.requests[-1]
    assert last.if_none_match is None and last.if_modified_since and last.status == 304


def test_a_new_version_is_applied_with_its_diff(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(100)))
    config, data_dir = setup(tmp_path, list_server)
    update_sources(config)
    list_server.put("/adult.txt", domain_list(names(90) + names(20, "new")))
    report = update_sources(config)
    [result] = report.sources
    assert result.status == FETCHED and (result.added, result.removed) == (20, 10)
    assert report.compiled
    matcher = Matcher.from_snapshot(str(report.snapshot))
    assert matcher.check("new3.example").blocked and not matcher.check("site95.example").blocked
    record = audit(data_dir)[-1]
    assert record["old"]["entries"] == 100 and record["new"]["entries"] == 110
    assert record["old"]["sha256"] != record["new"]["sha256"]


def test_same_content_with_a_new_etag_is_unchanged(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(10)))
    config, _ = setup(tmp_path, list_server)
    update_sources(config)
    list_server.files["/adult.txt"].etag = '"another"'
    report = update_sources(config)
    assert report.sources[0].status == UNCHANGED and not report.compiled


def test_cached_copy_is_used_when_the_server_is_gone(
    tmp_path: Path, list_server: ListServer
) -> None:
    list_server.put("/adult.txt", domain_list(names(30)))
    config, data_dir = setup(tmp_path, list_server)
    update_sources(config)
    list_server.stop()
    report = update_sources(config, force_compile=True)
    [result] = report.sources
    assert result.status == FALLBACK and result.result == "rejected"
    assert "cached copy" in (result.reason or "") and result.entries == 30
    assert (
        report.compiled
        and Matcher.from_snapshot(str(report.snapshot)).check("site1.example").blocked
    )
    assert audit(data_dir)[-1]["result"] == "rejected"


def test_server_errors_fall_back_to_the_cache(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(30)))
    config, _ = setup(tmp_path, list_server)
    update_sources(config)
    list_server.mode = "error"
    result = update_sources(config).sources[0]
    assert result.status == FALLBACK and "HTTP 500" in (result.reason or "")


def test_a_source_never_fetched_is_left_out(tmp_path: Path, list_server: ListServer) -> None:
    local = tmp_path / "local.txt"
    local.write_text("local.example\n")
    lists = url_list(list_server.url("/gone.txt"), "gone")
    lists += f'[[lists]]\npath = "{local}"\ncategory = "gambling"\n'
    config = load(write_config(tmp_path, lists))
    report = update_sources(config)
    assert report.sources[0].status == UNAVAILABLE and report.sources[0].entries is None
    matcher = Matcher.from_snapshot(str(report.snapshot))
    assert matcher.check("local.example").blocked


def test_a_truncated_download_is_rejected(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(200)))
    config, data_dir = setup(tmp_path, list_server)
    update_sources(config)
    good = (data_dir / "sources" / "adult" / "adult.txt").read_bytes()
    list_server.put("/adult.txt", domain_list(names(200, "other")))
    list_server.mode = "truncate"
    report = update_sources(config)
    [result] = report.sources
    assert result.status == REJECTED and "truncated" in (result.reason or "")
    assert (data_dir / "sources" / "adult" / "adult.txt").read_bytes() == good
    assert not (data_dir / "sources" / "adult" / "incoming").exists()
    assert Matcher.from_snapshot(str(report.snapshot)).check("site5.example").blocked
    record = audit(data_dir)[-1]
    assert record["result"] == "rejected" and "truncated" in record["reason"]


def test_a_shrunken_list_is_rejected(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(100)))
    config, data_dir = setup(tmp_path, list_server)
    update_sources(config)
    list_server.put("/adult.txt", domain_list(names(40)))
    report = update_sources(config)
    [result] = report.sources
    assert result.status == REJECTED and "shrank from 100 to 40" in (result.reason or "")
    assert result.entries == 100 and not report.compiled
    assert Matcher.from_snapshot(str(report.snapshot)).check("site80.example").blocked
    record = audit(data_dir)[-1]
    assert record["result"] == "rejected" and record["new"]["entries"] == 40
    # Within max_shrink (50% by default) the smaller list is applied.
    list_server.put("/adult.txt", domain_list(names(60)))
    assert update_sources(config).sources[0].status == FETCHED


def test_max_shrink_is_configurable(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(100)))
    config, _ = setup(tmp_path, list_server, max_shrink=0.05)
    update_sources(config)
    list_server.put("/adult.txt", domain_list(names(90)))
    assert update_sources(config).sources[0].status == REJECTED


def test_a_body_over_max_bytes_is_rejected(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(1000)))
    config, data_dir = setup(tmp_path, list_server, max_bytes=2048)
    result = update_sources(config).sources[0]
    assert result.status == REJECTED and "too large" in (result.reason or "")
    assert not (data_dir / "sources" / "adult" / "adult.txt").exists()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ut1_tree(categories: list[str]) -> bytes:
    members = {}
    for category in categories:
        for file in ("domains", "usage"):
            path = UT1 / category / file
            if path.exists():
                members[f"blacklists/{category}/{file}"] = path.read_bytes()
    return _tar_gz(members)


def _ut1_config(tmp_path: Path, server: ListServer):
    text = f'[[lists]]\nname = "ut1"\nurl = "{server.url("/blacklists.tar.gz")}"\n'
    return load(write_config(tmp_path, text)), tmp_path / "state"


def test_a_ut1_tree_archive_is_served_cached_and_loaded(
    tmp_path: Path, list_server: ListServer
) -> None:
    list_server.put("/blacklists.tar.gz", _ut1_tree(["gambling", "vpn", "liste_blanche"]))
    config, data_dir = _ut1_config(tmp_path, list_server)
    report = update_sources(config)
    [result] = report.sources
    assert result.status == FETCHED
    body = data_dir / "sources" / "ut1" / "blacklists.tar.gz"
    assert body.read_bytes()[:2] == b"\x1f\x8b"  # kept as downloaded, read in place
    expected = sum(
        1
        for category in ("gambling", "vpn", "liste_blanche")
        for line in (UT1 / category / "domains").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert abs(result.entries - expected) <= expected * 0.01
    gambling = next(
        line.strip()
        for line in (UT1 / "gambling" / "domains").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    verdict = Matcher.from_snapshot(str(report.snapshot)).check(gambling)
    assert verdict.blocked and verdict.category == "gambling" and verdict.list == "ut1/gambling"


def test_a_malformed_archive_is_rejected(tmp_path: Path, list_server: ListServer) -> None:
    good = _ut1_tree(["vpn"])
    list_server.put("/blacklists.tar.gz", good)
    config, data_dir = _ut1_config(tmp_path, list_server)
    update_sources(config)
    for bad in (good[: len(good) * 2 // 3], b"\x1f\x8b" + os.urandom(4000)):
        list_server.put("/blacklists.tar.gz", bad)
        result = update_sources(config).sources[0]
        assert result.status == REJECTED, result
        assert "gzip" in (result.reason or "") or "archive" in (result.reason or "")
        assert (data_dir / "sources" / "ut1" / "blacklists.tar.gz").read_bytes() == good
    # A complete gzip stream whose content is not a tar archive of a UT1 tree.
    list_server.put("/blacklists.tar.gz", gzip.compress(b"not a tar archive at all" * 100))
    result = update_sources(config).sources[0]
    assert result.status == REJECTED and "unreadable list" in (result.reason or "")
    reasons = [r["reason"] for r in audit(data_dir) if r["result"] == "rejected"]
    assert len(reasons) == 3


def test_a_gzip_domain_list(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/domains.gz", gzip.compress(domain_list(names(25))))
    config, data_dir = setup(tmp_path, list_server, path="/domains.gz")
    report = update_sources(config)
    assert report.sources[0].entries == 25
    assert (data_dir / "sources" / "adult" / "domains.gz").exists()
    assert Matcher.from_snapshot(str(report.snapshot)).check("site24.example").blocked


def test_diff_shows_a_pending_update_without_applying_it(
    tmp_path: Path, list_server: ListServer
) -> None:
    list_server.put("/adult.txt", domain_list(names(5)))
    config, data_dir = setup(tmp_path, list_server)
    update_sources(config)
    [same] = diff_source(config)
    assert same.status == NOT_MODIFIED and same.added == same.removed == []
    list_server.put("/adult.txt", domain_list(names(4) + ["*.wild.example", "Fresh.Example."]))
    records = len(AuditLog(data_dir / "audit.jsonl").read())
    [diff] = diff_source(config, names=["adult"])
    assert diff.status == FETCHED
    assert diff.added == ["*.wild.example", "fresh.example"] and diff.removed == ["site4.example"]
    # Nothing applied: the cache, the snapshot and the audit trail are as they were.
    assert b"fresh" not in (data_dir / "sources" / "adult" / "adult.txt").read_bytes()
    assert len(AuditLog(data_dir / "audit.jsonl").read()) == records
    assert snapshot_is_current(config, data_dir)
    with pytest.raises(KeyError):
        diff_source(config, names=["nope"])


def test_local_list_edits_and_config_changes_recompile(
    tmp_path: Path, list_server: ListServer
) -> None:
    local = tmp_path / "local.txt"
    local.write_text("one.example\n")
    config_file = write_config(tmp_path, f'[[lists]]\npath = "{local}"\ncategory = "adult"\n')
    config = load(config_file)
    assert update_sources(config).compiled
    assert not update_sources(config).compiled
    local.write_text("one.example\ntwo.example\n")
    os.utime(local, ns=(1, 1))  # a different mtime whatever the clock's resolution
    report = update_sources(config)
    assert (
        report.compiled and Matcher.from_snapshot(str(report.snapshot)).check("two.example").blocked
    )
    config_file.write_text(config_file.read_text().replace('"adult"', '"gambling"'))
    config = load(config_file)
    assert not snapshot_is_current(config, tmp_path / "state")
    report = update_sources(config)
    assert report.compiled
    assert Matcher.from_snapshot(str(report.snapshot)).check("two.example").category == "gambling"


def test_only_fetches_the_named_sources(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/a.txt", domain_list(names(3, "a")))
    list_server.put("/b.txt", domain_list(names(3, "b")))
    lists = url_list(list_server.url("/a.txt"), "a") + url_list(list_server.url("/b.txt"), "b")
    config = load(write_config(tmp_path, lists))
    update_sources(config)
    before = len(list_server.requests)
    report = update_sources(config, only=["b"])
    assert [(r.source, r.status) for r in report.sources] == [("a", "cached"), ("b", NOT_MODIFIED)]
    assert [r.path for r in list_server.requests[before:]] == ["/b.txt"]


def test_data_dir_override(tmp_path: Path, list_server: ListServer) -> None:
    list_server.put("/adult.txt", domain_list(names(3)))
    config, _ = setup(tmp_path, list_server)
    other = tmp_path / "elsewhere"
    assert config.source is not None
    config = load_config(config.source, resolv_conf="/nonexistent", data_dir=other)
    report = update_sources(config, other)
    assert report.snapshot == other / "lists.snap"
    assert (other / "sources" / "adult" / "adult.txt").exists()
    assert not (tmp_path / "state").exists()


def test_the_snapshot_is_verified_and_renamed_into_place(
    tmp_path: Path, list_server: ListServer
) -> None:
    list_server.put("/adult.txt", domain_list(names(10)))
    config, data_dir = setup(tmp_path, list_server)
    report = update_sources(config)
    assert sorted(p.name for p in data_dir.iterdir()) == [
        ".update.lock",
        "audit.jsonl",
        "lists.snap",
        "sources",
    ]
    meta = load_snapshot(report.snapshot, verify=True).snapshot_meta
    assert meta["fingerprint"]["sources"]["adult"] == audit(data_dir)[-1]["new"]["sha256"]
    assert (
        Matcher.from_lists([ListSpec(str(data_dir / "sources/adult/adult.txt"))])
        .check("site3.example")
        .blocked
    )


def test_a_new_url_for_a_source_is_fetched_unconditionally(
    tmp_path: Path, list_server: ListServer
) -> None:
    list_server.put("/adult.txt", domain_list(names(10)))
    list_server.put("/moved.txt", domain_list(names(10)))
    config, _ = setup(tmp_path, list_server)
    update_sources(config)
    config, _ = setup(tmp_path, list_server, path="/moved.txt")
    result = update_sources(config).sources[0]
    last = list_server.requests[-1]
    assert last.path == "/moved.txt" and last.if_none_match is None and last.status == 200
    assert result.status in (FETCHED, UNCHANGED)
    if result.status == FETCHED:
        assert sorted(p.name for p in (tmp_path / "state/sources/adult").iterdir()) == [
            "meta.json",
            "moved.txt",
        ]

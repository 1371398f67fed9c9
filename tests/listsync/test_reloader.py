"""The resolver's reloader: child-process rebuilds, the callback, timers and requests."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from filtercore import Matcher
from listsync.reloader import ListReloader
from listsync.update import UpdateReport
from tests.listsync.conftest import ListServer, domain_list, load, names, url_list, write_config

pytestmark = pytest.mark.timeout(120)


class Calls:
    """Collects callback calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.snapshots: list[str] = []
        self.reports: list[UpdateReport] = []
        self.event = threading.Event()

    def on_snapshot(self, path: str) -> None:
        self.snapshots.append(path)
        self.event.set()

    def on_report(self, report: UpdateReport) -> None:
        self.reports.append(report)

    def wait(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.snapshots) < count:
            assert time.monotonic() < deadline, f"no snapshot #{count} in {timeout} s"
            self.event.wait(0.1)
            self.event.clear()


@pytest.fixture
def setup(tmp_path: Path, list_server: ListServer):  # type: ignore[no-untyped-def]
    list_server.put("/adult.txt", domain_list(names(50)))
    config = load(write_config(tmp_path, url_list(list_server.url("/adult.txt"), "adult")))
    return config, tmp_path / "state"


def test_ensure_snapshot_builds_in_a_child_process(setup, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    config, data_dir = setup
    # Sabotage compilation in this process: the reloader must not compile here.
    import listsync.update

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled in the serving process")

    monkeypatch.setattr(listsync.update, "compile_snapshot", refuse)
    calls = Calls()
    reloader = ListReloader(config, calls.on_snapshot, on_report=calls.on_report)
    assert reloader.initial_snapshot() is None
    path = reloader.ensure_snapshot()
    assert path == str(data_dir / "lists.snap")
    assert calls.snapshots == [path]
    [report] = calls.reports
    assert report.compiled and report.error is None
    assert [r.status for r in report.sources] == ["fetched"]
    assert Matcher.from_snapshot(path).check("site1.example").blocked
    # A valid snapshot on disk: the next start serves at once, without a child run.
    again = ListReloader(config, calls.on_snapshot)
    assert again.ensure_snapshot() == path and again.runs == 0


def test_request_reload_swaps_in_a_new_snapshot(setup, list_server: ListServer) -> None:  # type: ignore[no-untyped-def]
    config, data_dir = setup
    calls = Calls()
    reloader = ListReloader(config, calls.on_snapshot, on_report=calls.on_report)
    reloader.start()
    try:
        calls.wait(1)  # first pass: the source was never fetched, so it is due
        matcher = Matcher.from_snapshot(calls.snapshots[-1])
        assert matcher.check("site1.example").blocked
        list_server.put("/adult.txt", domain_list(names(50) + ["fresh.example"]))
        reloader.request_reload()
        calls.wait(2)
        matcher = Matcher.from_snapshot(calls.snapshots[-1], verify=True)
        assert matcher.check("fresh.example").blocked
        assert calls.reports[-1].sources[0].added == 1
    finally:
        reloader.stop()
    assert reloader._thread is None


def test_refresh_timer_fetches_when_due(setup, list_server: ListServer) -> None:  # type: ignore[no-untyped-def]
    config, _ = setup
    # 2 s instead of the 60 s minimum the config file allows, to keep the test short.
    config = dataclasses.replace(
        config, lists=tuple(dataclasses.replace(lc, refresh=2.0) for lc in config.lists)
    )
    calls = Calls()
    reloader = ListReloader(config, calls.on_snapshot, on_report=calls.on_report)
    reloader.start()
    try:
        calls.wait(1)
        list_server.put("/adult.txt", domain_list(names(50) + ["timer.example"]))
        calls.wait(2, timeout=30)  # no request: the timer found the source due
        assert Matcher.from_snapshot(calls.snapshots[-1]).check("timer.example").blocked
    finally:
        reloader.stop()
    assert len(list_server.statuses("/adult.txt")) >= 2


def test_a_failed_source_is_retried_later_not_in_a_loop(
    tmp_path: Path, list_server: ListServer
) -> None:
    config = load(write_config(tmp_path, url_list(list_server.url("/missing.txt"), "gone")))
    calls = Calls()
    reloader = ListReloader(config, calls.on_snapshot, on_report=calls.on_report, retry_after=3600)
    reloader.start()
    try:
        deadline = time.monotonic() + 60
        while not calls.reports and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
    finally:
        reloader.stop()
    assert calls.reports[0].sources[0].status == "unavailable"
    assert list_server.statuses("/missing.txt") == [404]  # one try, then the retry delay


def test_stop_terminates_a_running_child(setup) -> None:  # type: ignore[no-untyped-def]
    config, _ = setup
    reloader = ListReloader(config, lambda path: None, child_timeout=60)
    result: list[UpdateReport] = []
    worker = threading.Thread(target=lambda: result.append(reloader.run_now(force=True)))
    worker.start()
    time.sleep(0.3)
    reloader.stop()
    worker.join(30)
    assert result and (
        (result[0].error or "").startswith("list update stopped") or result[0].compiled
    )


def test_a_child_past_its_time_is_killed(setup) -> None:  # type: ignore[no-untyped-def]
    config, data_dir = setup
    reloader = ListReloader(config, lambda path: None, child_timeout=0.05)
    report = reloader.run_now(force=True)
    assert (report.error or "").startswith("list update timed out")
    assert not report.compiled and reloader.last_report is report


def test_queries_during_ten_reloads_match_the_old_or_the_new_lists(
    tmp_path: Path, list_server: ListServer
) -> None:
    """A checker thread queries the matcher in force without pause while the reloader swaps
    in ten new versions: no query fails, and every verdict is exactly that of one version
    (version k lists `vK.example` and the shared base names, nothing else)."""
    base = names(2000)

    def version(k: int) -> bytes:
        return domain_list([*base, f"v{k}.example"])

    list_server.put("/adult.txt", version(0))
    config = load(write_config(tmp_path, url_list(list_server.url("/adult.txt"), "adult")))
    current: list[Matcher] = []
    swapped = threading.Event()

    def on_snapshot(path: str) -> None:
        current.append(Matcher.from_snapshot(path))  # the swap: one reference appended
        swapped.set()

    reloader = ListReloader(config, on_snapshot)
    path = reloader.ensure_snapshot()
    assert path is not None and len(current) == 1
    stop = threading.Event()
    seen_versions: set[int] = set()
    failures: list[str] = []
    queries = [0]
    probes = [f"v{k}.example" for k in range(11)]

    def checker() -> None:
        while not stop.is_set():
            matcher = current[-1]
            try:
                blocked = [k for k, probe in enumerate(probes) if matcher.check(probe).blocked]
                base_ok = matcher.check(f"www.{base[queries[0] % len(base)]}").blocked
                clean = not matcher.check("unlisted.example").blocked
            except Exception as exc:  # a failed query is a test failure, not a crash
                failures.append(repr(exc))
                continue
            queries[0] += 1
            if len(blocked) != 1 or not base_ok or not clean:
                failures.append(f"mixed verdicts: versions {blocked}, base {base_ok}")
            else:
                seen_versions.add(blocked[0])

    thread = threading.Thread(target=checker)
    thread.start()
    try:
        for k in range(1, 11):
            list_server.put("/adult.txt", version(k))
            swapped.clear()
            report = reloader.run_now()
            assert report.compiled and swapped.is_set(), report
            deadline = time.monotonic() + 10  # let the checker query the new version
            while k not in seen_versions and not failures and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert seen_versions == set(range(11)) and queries[0] > 100

"""Keeping the resolver's lists fresh without stalling it or doubling its memory.

`ListReloader` belongs to the serving process. It runs a timer thread that knows when each
URL source is due (its `refresh` interval after the server last confirmed it) and takes
`request_reload()` calls (SIGHUP, the admin endpoint). Each refresh runs `update_sources`
in a *child process* started with the `spawn` context: downloading, parsing millions of
entries and compiling them costs the child's memory and CPU, not the server's, and the
child exits afterwards, returning every byte it used. Nothing of that work touches the
server's event loop; the thread only waits on a pipe.

When the child has put a new snapshot in place (written to a temporary file, verified,
renamed), the reloader calls `on_snapshot(path)`. The server then maps the new file with
`Matcher.from_snapshot(path)` (a header parse: milliseconds) and swaps its reference; the
old mapping is released when the last query using it finishes. Because the table lives in
a file mapping, the server's peak memory during a reload is its steady state plus the
pages of the new table that queries touch before the old table is dropped.

Wiring (see docs/lists.md):

    reloader = ListReloader(config, on_snapshot=..., on_report=...)
    path = reloader.ensure_snapshot()        # a valid snapshot on disk: returns at once
    matcher = Matcher.from_snapshot(path)
    reloader.start()                         # refreshes in the background from now on
    ...
    reloader.request_reload()                # SIGHUP
    reloader.stop()
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filtercore.snapshot import SnapshotError, load_snapshot
from listsync.update import (
    FALLBACK,
    REJECTED,
    UNAVAILABLE,
    LogProgress,
    UpdateReport,
    config_data_dir,
    due_at,
    snapshot_path,
    update_sources,
    url_sources,
)

if TYPE_CHECKING:
    from fdconfig import Config

log = logging.getLogger(__name__)

_FAILED = (FALLBACK, REJECTED, UNAVAILABLE)


def _child_main(
    conn: Connection,
    config: Config,
    data_dir: str,
    only: list[str] | None,
    force: bool,
    log_level: int,
) -> None:
    """The child process: run one update and send its report (or the error) back."""
    # A parent that supervises workers blocks these signals (workers.py) and a spawned
    # child inherits that mask: unblock them, or terminate() could not stop the child.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    logging.basicConfig(level=log_level, format="filterdns list update: %(message)s")
    # httpx logs every request at INFO; our own lines say what each download did.
    logging.getLogger("httpx").setLevel(max(log_level, logging.WARNING))
    try:
        report: Any = update_sources(
            config, data_dir, only=only, force_compile=force, progress=LogProgress()
        )
    except BaseException as exc:  # anything at all: the parent must hear about it
        report = UpdateReport(error=f"{type(exc).__name__}: {exc}")
    conn.send(report)
    conn.close()


class ListReloader:
    """Refreshes list sources on their timers and on request, in a child process.

    Args:
        config: the loaded configuration.
        on_snapshot: called with the path of a new, verified snapshot, from the reloader's
            thread (a server with an event loop hands it over with `call_soon_threadsafe`).
        on_report: called with every `UpdateReport` (for metrics), from the same thread.
        data_dir: overrides `server.data_dir`.
        retry_after: seconds before a source whose refresh failed is tried again; the wait
            doubles with each failure in a row, up to `retry_max` (and at most the source's
            `refresh` interval).
        retry_max: the longest wait between two tries of a failing source.
        start_method: the multiprocessing start method; "spawn" (default) or "forkserver".
            Never "fork": a forked child would share the server's heap pages copy-on-write
            and its threads' locks.
        child_timeout: seconds a child may run before it is killed and the run failed.
    """

    def __init__(
        self,
        config: Config,
        on_snapshot: Callable[[str], None],
        *,
        on_report: Callable[[UpdateReport], None] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        retry_after: float = 60.0,
        retry_max: float = 3600.0,
        start_method: str = "spawn",
        child_timeout: float = 3600.0,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be spawn or forkserver, got {start_method!r}")
        self.config = config
        self.data_dir = Path(data_dir) if data_dir is not None else config_data_dir(config)
        self.on_snapshot = on_snapshot
        self.on_report = on_report
        self.retry_after = retry_after
        self.retry_max = retry_max
        self.child_timeout = child_timeout
        self._context: Any = multiprocessing.get_context(start_method)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._force = False
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}  # failed tries in a row, per source
        self._thread: threading.Thread | None = None
        self._child: Any = None
        self.last_report: UpdateReport | None = None
        self.runs = 0

    @property
    def snapshot_path(self) -> Path:
        return snapshot_path(self.data_dir)

    # -- start-up ---------------------------------------------------------------------

    def initial_snapshot(self) -> str | None:
        """The snapshot on disk if it loads (header checksum good), else None.

        With one, the server can serve at once; `start()` then refreshes what is due and
        recompiles if the configured lists changed since it was built.
        """
        try:
            load_snapshot(self.snapshot_path)
        except SnapshotError as exc:
            log.info("no usable snapshot yet (%s)", exc.reason)
            return None
        return str(self.snapshot_path)

    def ensure_snapshot(self) -> str | None:
        """`initial_snapshot()`, or build one now (in a child process) if there is none.

        The first build downloads nothing when some list is at hand without a download (a
        local list or a cached copy): the server then serves those at once and `start()`
        fetches the URL sources in the background. Only when every list still has to be
        downloaded does the build wait for the downloads.

        Returns None if no snapshot could be built (the report is in `last_report`).
        """
        path = self.initial_snapshot()
        if path is not None:
            return path
        at_hand = any(not lc.url or Path(lc.path).exists() for lc in self.config.lists)
        report = self.run_now(only=[] if at_hand else None, force=True)
        return str(report.snapshot) if report.snapshot and not report.error else None

    def require_snapshot(self) -> str:
        """`ensure_snapshot()`, raising RuntimeError with the reason if none could be built."""
        path = self.ensure_snapshot()
        if path is None:
            report = self.last_report
            raise RuntimeError(
                f"no snapshot could be built: {report.error if report else 'unknown error'}"
            )
        return path

    # -- control ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timer thread; its first pass refreshes the sources that are due."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="list-reloader", daemon=True)
        self._thread.start()

    def request_reload(self) -> None:
        """Refresh every source now and recompile if any list changed (thread-safe)."""
        with self._lock:
            self._force = True
        self._wake.set()

    def update_config(self, config: Config) -> None:
        """Use a new configuration from the next run on (after a config reload)."""
        with self._lock:
            self.config = config
            self._force = True
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; a running child is terminated (its temporary files are left
        for the next run to replace; the snapshot in place is never half-written)."""
        self._stopping.set()
        self._wake.set()
        child = self._child
        if child is not None and child.is_alive():
            child.terminate()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- one run ------------------------------------------------------------------------

    def run_now(self, *, only: list[str] | None = None, force: bool = False) -> UpdateReport:
        """Run one update in a child process and wait for it (the timer thread uses this
        too). Calls `on_report`, and `on_snapshot` if a new snapshot was put in place."""
        report = self._run_child(only, force)
        self.runs += 1
        self.last_report = report
        now = time.time()
        offline = self.config.server.offline
        for result in report.sources:
            if offline or (only is not None and result.source not in only):
                continue  # not tried in this run
            if result.status in _FAILED:
                self._back_off(result.source, now)
            else:
                self._retry_at.pop(result.source, None)
                self._failures.pop(result.source, None)
        if self.on_report is not None:
            self._safely(self.on_report, report)
        if report.compiled and report.snapshot is not None and not report.error:
            self._safely(self.on_snapshot, str(report.snapshot))
        return report

    def _back_off(self, source: str, now: float) -> None:
        """Schedule the next try of a failed source: `retry_after`, doubled per failure in
        a row, at most `retry_max` or the source's refresh interval."""
        failures = self._failures.get(source, 0) + 1
        self._failures[source] = failures
        refresh = next((lc.refresh for lc in url_sources(self.config) if lc.name == source), None)
        delay = min(self.retry_after * 2 ** min(failures - 1, 32), self.retry_max)
        if refresh is not None:
            delay = min(delay, refresh)
        self._retry_at[source] = now + delay
        log.info("%s: try %d failed, next try in %s", source, failures, _duration(delay))

    def _run_child(self, only: list[str] | None, force: bool) -> UpdateReport:
        receive, send = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child_main,
            args=(send, self.config, str(self.data_dir), only, force, log.getEffectiveLevel()),
            name="filterdns-list-update",
            daemon=True,
        )
        # Starting the first spawned child launches multiprocessing's resource tracker,
        # which then *unblocks* SIGINT/SIGTERM in this thread (CPython's
        # ResourceTracker.ensure_running). A supervisor that blocks them to collect them
        # with sigtimedwait (workers.py) would then die by SIGTERM's default action:
        # put this thread's mask back.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        try:
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._child = child
        send.close()  # the child holds the only write end: EOF when it dies
        deadline = time.monotonic() + self.child_timeout
        why = "process died"
        try:
            while not receive.poll(0.2):
                if self._stopping.is_set() or time.monotonic() > deadline:
                    why = "stopped" if self._stopping.is_set() else "timed out"
                    child.terminate()
                    break
                if not child.is_alive() and not receive.poll(0):
                    break
            else:
                try:
                    report: UpdateReport = receive.recv()
                    child.join(30)
                    return report
                except EOFError:
                    pass  # the child died without a word: said below
            child.join(5)
            if child.exitcode is None:
                child.kill()
                child.join(5)
            if self._stopping.is_set():
                why = "stopped"
            return UpdateReport(error=f"list update {why} (exit code {child.exitcode})")
        finally:
            receive.close()
            self._child = None

    @staticmethod
    def _safely(callback: Callable[[Any], None], value: Any) -> None:
        try:
            callback(value)
        except Exception:
            log.exception("list reload callback failed")

    # -- the timer thread -----------------------------------------------------------------

    def _due(self, now: float) -> tuple[list[str], float]:
        """The sources due now, and when the next one will be."""
        due: list[str] = []
        upcoming = now + 3600.0  # look again at least hourly (clock changes, new config)
        if self.config.server.offline:
            return due, upcoming
        for lc in url_sources(self.config):
            name = lc.name or ""
            when = max(due_at(lc), self._retry_at.get(name, 0.0))
            if when <= now:
                due.append(name)
            else:
                upcoming = min(upcoming, when)
        return due, upcoming

    def _loop(self) -> None:
        first = True
        while not self._stopping.is_set():
            now = time.time()
            with self._lock:
                force, self._force = self._force, False
            due, upcoming = self._due(now)
            if force or due or first:
                # The first pass also recompiles when the lists changed since the snapshot
                # on disk was built (update_sources checks its fingerprint).
                self.run_now(only=None if force else due, force=False)
                first = False
                continue
            self._wake.wait(max(1.0, upcoming - time.time()))
            self._wake.clear()


def _duration(seconds: float) -> str:
    """`45 s`, `2 min`, `1 h` for the retry log line."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"

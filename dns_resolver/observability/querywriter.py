"""The console's query-log writer, in a process of its own beside each serving process.

With `[console] enabled = true` the rows the console shows (the JSON-lines file, the
overview's statistics, the SQLite store) cost about 10 us of CPU each to make, parse,
describe, anonymise, count and insert: far more than answering from C. So the serving
process does none of it. `WriterLink` takes the query log's place there (same `log`,
`log_formatted`, `fast_path_settings`): it queues C's already-formatted buffers and the
Python chain's entries, and a sender thread hands them to the writer process through a
pipe, one write per batch of thousands of rows. The writer process runs the query log
exactly as the thread did before (`QueryLog` with the statistics and the store as sinks,
clients described by their policy and anonymised there) and publishes its statistics,
which the console reads (`consolefeed.py`).

Answers never wait for the writer. When it is behind, the pipe fills, the link's queue
grows to `BACKLOG_BYTES`, and then new batches are dropped and counted
(`filterdns_console_rows_dropped_total{stage="handover"}`). The rows dropped are counted by
result on the serving side (a byte search per batch, no parsing), and those counts reach
the writer later, so the overview's query counts, results, blocked share and chart stay
exact; only the dropped rows' names, clients, categories and policies are missing.

The writer process is forked from the serving process, so it shares its lists (the
mapped snapshot, to name the rule of a block C answered) and policy table (to describe
a client's policy, schedule or pause) as they were at the fork. When either changes (a
list reload, a pause, a schedule boundary, a new configuration) or the process dies, the
link forks a new one: the old one writes what it was sent and publishes its statistics,
and the new one starts from them, so no count starts from zero.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import gc
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from dns_resolver.observability.querylog import QueryLog, make_entry
from dns_resolver.observability.querystats import QueryStats
from dns_resolver.observability.querystore import QueryStore
from dns_resolver.workershare import write_file
from fdconfig import ANONYMIZE_MODES, Config

__all__ = ["BACKLOG_BYTES", "WriterLink"]

log = logging.getLogger(__name__)

BACKLOG_BYTES = 32 << 20
"""What the serving process keeps for the writer beyond the pipe: ~1.5 s at 100,000 q/s."""
BACKLOG_ENV = "FILTERDNS_CONSOLE_BACKLOG"
"""Fault injection for tests: a smaller backlog (bytes), and a pipe no larger."""
PROCESS_NAME = "filterdns-qlog"  # the writer's name in ps and /proc/PID/comm
BACKLOG_ENTRIES = 50_000  # the Python chain's entries waiting (answers slower than C's)
PIPE_SIZE = 1 << 20  # Linux's limit for an unprivileged process (fs.pipe-max-size)
SEND_INTERVAL = 0.05
PUBLISH_INTERVAL = 0.25
"""How often the writer publishes its statistics while rows arrive: the overview is at
most this much (plus the query log's 0.1 s hand-over) behind the queries."""
STOP_TIMEOUT = 30.0
_FRAME = struct.Struct("!cI")
_C_LINES, _ENTRIES, _LOST = b"C", b"P", b"L"
_RESULTS = (b"cached", b"blocked", b"allowed", b"ratelimited")


class Told(NamedTuple):
    """What the writer reads of a `Verdict` (which holds a callable: not picklable)."""

    category: str | None
    list: str | None
    rule: str | None


class WriterLink:
    """The serving side: a query log whose rows a writer process makes (module doc).

    Args:
        config: the configuration (`[querylog]` and `[console]`).
        state: the file the writer publishes its statistics and counters to (pickled)
            and starts from.
        store_dir: the folder of the SQLite store this process's writer fills.
        parts: how many writers share `[console]`'s store limits.
    """

    def __init__(self, config: Config, state: Path, store_dir: Path, parts: int = 1) -> None:
        self.config = config
        self.state = state
        self.store_dir = store_dir
        self.parts = parts
        self.dropped = 0  # rows dropped at the hand-over (the writer behind)
        # As QueryLog's: set by the fast path, read in the writer process (forked).
        self.earlier_lines: Callable[[], bytes] | None = None
        self.fast_upstream: Callable[[str, str | None], str | None] | None = None
        self.resolver: Any = None
        self.key = os.urandom(16)  # one pseudonym key for every writer of this run
        self._queue: collections.deque[bytes | tuple[Any, ...]] = collections.deque()
        self._queued = 0  # bytes of C lines in `_queue`
        self.backlog = int(os.environ.get(BACKLOG_ENV) or BACKLOG_BYTES)
        self._lock = threading.Lock()  # `_queued` and `_lost`: the loop vs the sender
        # (minute, result) -> rows dropped: sent once the writer takes rows again.
        self._lost: Counter[tuple[int, str]] = Counter()
        self._wake = threading.Event()
        self._closed = False
        self._pid = 0  # the writer process, while there is one
        self._ended: int | None = None  # its wait status once reaped
        self._fd = -1
        self._generation: tuple[Any, ...] | None = None
        self._thread: threading.Thread | None = None
        # The link this one replaces (a configuration reload): its writer finishes first,
        # so two never write one store or file.
        self.after: WriterLink | None = None

    # -- the query log's interface (the event loop's thread) --------------------------------

    def start(self, resolver: Any) -> None:
        """Begin handing rows over; the writer describes them with `resolver`'s state."""
        self.resolver = resolver
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name="querylog-link",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def fast_path_settings(self) -> tuple[int, bytes, dict[int, str]]:
        """As `QueryLog.fast_path_settings` with sinks: C writes clients as they are, the
        writer anonymises them."""
        return ANONYMIZE_MODES.index("none"), self.key, QueryLog.fast_path_names()

    def log(self, client: str, qname: str, qtype: int, protocol: str, result: str,
            duration: float, **fields: Any) -> None:  # fmt: skip
        """Queue one entry of the Python chain (`QueryLog.log`'s arguments)."""
        if self._closed:
            return
        if self.earlier_lines is not None:
            self.log_formatted(self.earlier_lines())  # keep the rows in answer order
        if len(self._queue) >= BACKLOG_ENTRIES:
            self._drop({result: 1})
            return
        verdict = fields.get("verdict")
        if verdict is not None:
            # A rule still to be read from its list's file is not read on the answer's
            # path: the writer's store looks a block's rule up itself (`explain`).
            fields["verdict"] = Told(verdict.category, verdict.list, verdict.rule_at_hand)
        self._queue.append(make_entry(client, qname, qtype, protocol, result, duration, **fields))

    def log_formatted(self, lines: bytes) -> None:
        """Queue C's lines (one buffer, many rows): no parsing here."""
        if self._closed or not lines:
            return
        with self._lock:
            if self._queued + len(lines) > self.backlog:
                fits = False
            else:
                fits = True
                self._queued += len(lines)
        if fits:
            self._queue.append(lines)
            return
        counts = {r.decode(): lines.count(b'"result":"%s"' % r) for r in _RESULTS}
        self._drop({r: n for r, n in counts.items() if n})

    def _drop(self, counts: dict[str, int]) -> None:
        minute = int(time.time() // 60)
        with self._lock:
            for result, n in counts.items():
                self._lost[(minute, result)] += n
                self.dropped += n

    def close(self) -> None:
        """Hand over what is queued, then let the writer finish and wait for it."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    # -- the sender thread ------------------------------------------------------------------

    def _send_loop(self) -> None:
        before = self.after
        if before is not None and before._thread is not None:
            before._thread.join()
        while True:
            self._wake.wait(SEND_INTERVAL)
            self._wake.clear()
            closing = self._closed
            try:
                self._ensure_writer()
                self._send(self._frames())
            except OSError as exc:  # the writer died: started again on the next round
                log.warning("query-log writer: hand-over failed (%s); starting it again", exc)
                self._stop_writer()
            if closing:
                self._stop_writer()
                return

    def _ensure_writer(self) -> None:
        """Start the writer, or fork a new one when the state it describes rows with
        changed (lists, policies, routes) or it died."""
        resolver = self.resolver
        policies = getattr(resolver, "policies", None)
        generation = (
            id(getattr(resolver, "matcher", None)),
            id(policies),
            getattr(policies, "version", None),
            id(getattr(resolver, "local", None)),
            self.fast_upstream,
            # The default set's upstream: C's pools start after the link, and fail over.
            self.fast_upstream("", None) if self.fast_upstream is not None else None,
        )
        status = self._status() if self._pid else None
        if self._pid and status is None and generation == self._generation:
            return
        if self._pid:
            if status is not None:
                log.warning("query-log writer (pid %d) ended (wait status %d); starting it "
                            "again", self._pid, status)  # fmt: skip
            self._stop_writer()
        self._generation = generation
        read, write = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, min(PIPE_SIZE, self.backlog))
        pid = os.fork()
        if pid == 0:  # the writer: this thread is all it has of the serving process
            code = 1
            try:
                os.close(write)
                _writer_main(self, read)
                code = 0
            except BaseException:
                with contextlib.suppress(BaseException):
                    log.exception("query-log writer failed")
            finally:
                os._exit(code)  # none of the serving process's exit handlers
        os.close(read)
        self._pid, self._fd = pid, write

    def _frames(self) -> list[bytes]:
        """What is queued, framed: C's buffers as they are, runs of entries pickled."""
        out: list[bytes] = []
        entries: list[tuple[Any, ...]] = []
        queue = self._queue
        taken = 0
        while queue:
            item = queue.popleft()
            if isinstance(item, bytes):
                if entries:
                    out.append(_frame(_ENTRIES, pickle.dumps(entries, protocol=5)))
                    entries = []
                out.append(_FRAME.pack(_C_LINES, len(item)))
                out.append(item)
                taken += len(item)
            else:
                entries.append(item)
        if entries:
            out.append(_frame(_ENTRIES, pickle.dumps(entries, protocol=5)))
        with self._lock:
            self._queued -= taken
            lost, self._lost = self._lost, Counter()
        if lost:
            out.append(_frame(_LOST, pickle.dumps(dict(lost), protocol=5)))
        return out

    def _send(self, frames: list[bytes]) -> None:
        """Write `frames` to the pipe, waiting while it is full (this thread only: the
        queue behind it is what fills, and then drops)."""
        fd = self._fd
        for frame in frames:
            view = memoryview(frame)
            while view:
                _, writable, _ = select.select([], [fd], [], 1.0)
                if writable:
                    view = view[os.write(fd, view) :]
                elif self._status() is not None:
                    raise OSError("the writer process ended")

    def _status(self) -> int | None:
        """The writer's wait status once it ended (reaped), None while it runs."""
        if self._ended is None:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                self._ended = status
        return self._ended

    def _stop_writer(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # the writer reads to the end, then finishes
            self._fd = -1
        if not self._pid:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._status() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._status() is None:
            log.error("query-log writer (pid %d) did not finish; killing it", self._pid)
            os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
        self._pid, self._ended = 0, None


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


# -- the writer process ------------------------------------------------------------------


def _writer_main(link: WriterLink, read: int) -> None:
    """The forked writer: read frames until the serving process closes the pipe."""
    # The serving process's objects are never collected here (their finalizers would
    # close descriptors), and its descriptors are closed: a copy of a pipe's end held
    # here would keep a peer of the serving process (the list reloader's child) from
    # seeing its end. What the writer reads (the mapped lists) needs none of them.
    gc.freeze()
    os.dup2(read, 3)
    read = 3
    os.closerange(4, os.sysconf("SC_OPEN_MAX"))
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(PROCESS_NAME)
    _fresh_streams()
    # Ended by the pipe's end, after writing everything: not by the serving process's
    # signals, whose handlers (the event loop's wake-up pipe) it must not run.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # One writer at a time per store and statistics: the writer of a worker that died
    # may still be writing what it was sent; its successor waits for it (the lock goes
    # with the process, however it ends) and then starts from what it published.
    lock = os.open(f"{link.state}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    writer = Writer(link)
    try:
        writer.run(read)
    finally:
        writer.close()


def _fresh_streams() -> None:
    """New stdout and stderr objects for the log: another thread of the serving process
    may have held the old ones' locks at the fork, and they would never be let go here."""
    fresh: dict[int, Any] = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = open(fd, "w", buffering=1, closefd=False)  # noqa: SIM115
        for old in (getattr(sys, name), getattr(sys, f"__{name}__")):
            fresh[id(old)] = stream
        setattr(sys, name, stream)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in fresh:
                handler.stream = fresh[id(handler.stream)]  # not setStream: it flushes


class Writer:
    """The query log with the console's sinks, in the writer process."""

    def __init__(self, link: WriterLink) -> None:
        config = link.config
        c, q = config.console, config.querylog
        self.state = link.state
        before: dict[str, Any] = {}
        with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError):
            before = pickle.loads(link.state.read_bytes())
        self.stats = QueryStats.from_state(before["stats"]) if before else QueryStats()
        counters = before.get("counters", {})
        self.qlog = QueryLog(q.path, anonymize=q.anonymize, max_bytes=q.max_bytes)
        self.qlog.set_key(link.key)
        self.handover_dropped = counters.get("handover_dropped", 0)
        self.qlog.written = counters.get("querylog_written", 0)
        self.qlog.dropped = counters.get("querylog_dropped", 0)
        self.store = (
            QueryStore(link.store_dir, retention_days=c.retention_days,
                       max_bytes=c.max_bytes // link.parts, max_rows=c.max_rows // link.parts)
            if c.store else None
        )  # fmt: skip
        resolver = link.resolver
        policies = getattr(resolver, "policies", None)
        if policies is not None:
            from dns_resolver.observability.consolefeed import describe_client

            self.qlog.describe_client = lambda client, category: describe_client(
                policies, client, category
            )
        self.qlog.fast_upstream = link.fast_upstream
        self.qlog.sinks.append(self.stats.add)
        if self.store is not None:
            self.store.written = counters.get("store_written", 0)
            self.store.dropped = counters.get("store_dropped", 0)
            matcher = resolver.matcher
            self.store.explain = matcher.check
            self.qlog.sinks.append(self.store.add)
        self.qlog.fast_path_settings()  # C writes clients as they are: anonymised here
        self._published = -1
        self._publish_at = 0.0

    def run(self, fd: int) -> None:
        buffer = bytearray()
        while True:
            ready, _, _ = select.select([fd], [], [], PUBLISH_INTERVAL)
            if ready:
                chunk = os.read(fd, 4 << 20)
                if not chunk:
                    return
                buffer += chunk
                del buffer[: self._take(buffer)]
                self.qlog.flush()  # what came in one read: one batch for the sinks
            self._publish()

    def _take(self, buffer: bytearray) -> int:
        """Queue the whole frames at the start of `buffer`; the bytes they took."""
        at = 0
        view = memoryview(buffer)
        try:
            while len(buffer) - at >= _FRAME.size:
                kind, size = _FRAME.unpack_from(buffer, at)
                end = at + _FRAME.size + size
                if end > len(buffer):
                    break
                payload = bytes(view[at + _FRAME.size : end])
                if kind == _C_LINES:
                    self.qlog.log_formatted(payload)
                elif kind == _ENTRIES:
                    self.qlog.log_entries(pickle.loads(payload))
                else:
                    lost = pickle.loads(payload)
                    self.stats.add_lost(lost)
                    self.handover_dropped += sum(lost.values())
                at = end
        finally:
            view.release()
        return at

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (self.stats.changes == self._published or now < self._publish_at):
            return
        self._published = self.stats.changes
        self._publish_at = now + PUBLISH_INTERVAL
        counters = {
            "querylog_written": self.qlog.written,
            "querylog_dropped": self.qlog.dropped,
            "handover_dropped": self.handover_dropped,
        }
        if self.store is not None:
            counters.update({f"store_{k}": v for k, v in self.store.stats().items()})
        payload = pickle.dumps({"stats": self.stats.state(), "counters": counters}, protocol=5)
        write_file(self.state, payload)

    def close(self) -> None:
        self.qlog.close()
        if self.store is not None:
            self.store.close()
        self._publish(force=True)

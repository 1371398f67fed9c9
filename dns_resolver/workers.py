"""`workers = N`: N serving processes on the same addresses, one copy of the lists.

The parent compiles the lists once into a snapshot file (or takes the one given with
`serve --snapshot`; with `server.data_dir` set, its `ListReloader` provides
`<data_dir>/lists.snap`, built in a child process if missing), then forks N workers. Each
worker runs the ordinary `App` with `SO_REUSEPORT` listeners (the kernel spreads clients
over them), its own cache and fast path, and maps the snapshot read-only with
`Matcher.from_snapshot`: the table pages are the file's page-cache pages, shared by every
worker, so N workers cost one copy.

With `[admin]` on, worker 0 serves the admin listener and the console; the other
workers' console aggregates and the policy switches (pause, block-now) reach it, and
them, through files in the parent's private folder (`workershare.py`).

With `[subscribers]` on, the parent is the one writer of the subscribers' table every
worker maps (built before forking, then kept current from the store's change log on a
thread) and hears RADIUS on a thread of its own. Worker 0's provisioning API writes to
the store, as the CLI does, and wakes the parent's writer with SIGUSR1 so the change
is in the table at once rather than at the next poll.

The parent serves no clients' queries itself. It
- passes SIGTERM/SIGINT on and waits for the workers (bounded, then SIGKILL);
- on SIGHUP re-reads and validates the configuration file (`reconfigure.py`; a file that
  does not validate changes nothing, and the parent counts the outcome). A changed
  configuration is handed to the workers in a file of the parent's (`ConfigHandoff`),
  read by each worker on the SIGHUP that follows, so the workers apply what the parent
  validated, never a file edited in between. Then it recompiles the lists into a new
  snapshot (written to a temporary file and renamed over the old one, so a worker maps
  either the old or the new file, never half of one) and passes SIGHUP on: each worker
  applies the configuration, re-maps the file and clears its cache. With data_dir the
  reloader does the refresh (on SIGHUP and on its timers) in a child process and each new
  snapshot is passed on to the workers the same way (a changed configuration is passed on
  at once, without waiting for the lists);
- restarts a worker that died (at most once a second);
- serves `/metrics`: at each scrape it reads every worker's own metrics listener (an
  ephemeral loopback port each worker reports through a pipe) and adds the samples up, so
  nothing is shared or locked per query. Gauges that every worker reports alike (list
  entries, load time, upstream health) are taken from one worker rather than summed.
  The config reload counter is the parent's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from dns_resolver import eventloop
from dns_resolver.reconfigure import ConfigSource, apply_logging, reread
from dns_resolver.workershare import CONSOLE_WORKER, WorkerShare
from fdconfig import Address, Config

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds the workers get to exit after SIGTERM
SCRAPE_TIMEOUT = 2.0
# Gauges every worker reports with the same value: not summed.
_SAME_IN_EVERY_WORKER = (
    "filterdns_list_entries",
    "filterdns_lists_loaded_timestamp_seconds",
    "filterdns_upstream_healthy",
)
# Counted by the parent, which re-reads the file: the workers' own figures are left out.
_PARENT_OWNS = ("filterdns_config_reloads",)
# The parent's signals: SIGUSR1 is worker 0 saying the subscribers' store changed.
_HANDLED = frozenset(
    {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1}
)


def snapshot_loader(path: str) -> Any:
    """A `load_matcher` for `App`: map the compiled snapshot at `path` (re-read on reload)."""

    def load() -> Any:
        from filtercore import Matcher

        return Matcher.from_snapshot(path)

    return load


class ConfigHandoff:
    """The configuration the parent validated, in a private file the workers read on
    SIGHUP (replaced atomically, like the snapshot)."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, "config.pickle")

    def write(self, config: Config) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(config, f)
        os.replace(tmp, self.path)

    def read(self, index: int) -> Config:
        """The configuration for worker `index` (its metrics on its own ephemeral port)."""
        with open(self.path, "rb") as f:
            return _worker_config(pickle.load(f), index)


def _worker_config(config: Config, index: int) -> Config:
    if index != CONSOLE_WORKER and config.admin.enabled:
        # One worker serves the admin listener and the console (workershare.py); the
        # others' aggregates and the policy switches reach it through shared files.
        config = replace(config, admin=replace(config.admin, enabled=False))
    if config.metrics.listen is None:
        return config
    # Each worker serves its own figures on an ephemeral loopback port; the parent adds
    # them up on its configured listener.
    return replace(config, metrics=replace(config.metrics, listen=Address("127.0.0.1", 0)))


class Supervisor:
    """The parent of the workers. `run()` returns the exit status."""

    def __init__(
        self,
        config: Config,
        workers: int,
        snapshot: str | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.config = config
        self.source = source or ConfigSource(config.source)
        self._handoff_dir = tempfile.TemporaryDirectory(prefix="filterdns-config-")
        self.handoff = ConfigHandoff(self._handoff_dir.name)
        self.config_reloads: Any = None  # the parent's counter, with a metrics listener
        self.count = workers
        self.given_snapshot = snapshot
        self.snapshot = snapshot or ""
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.children: dict[int, int] = {}  # pid -> worker index
        self.metrics_ports: dict[int, int] = {}  # worker index -> its metrics port
        self._pipes: dict[int, int] = {}  # read end -> worker index
        # [observed]: the workers send their newly observed domains to worker 0, which
        # counts every worker's clients (made before forking, kept for restarts).
        self._leads_link: tuple[socket.socket, socket.socket] | None = None
        self._last_restart = 0.0
        self.reloader: Any = None  # listsync.reloader.ListReloader with server.data_dir
        self.subscribers: Any = None  # subscribers.runtime.Subscribers: the table's writer
        self.radius: Any = None  # subscribers.radius.RadiusAccounting, once listening
        self._control_failed: list[str] = []  # why RADIUS did not start
        # Set from the reloader's thread; the supervising loop passes SIGHUP on, so
        # signals and the children table stay with the main thread.
        self._new_snapshot = threading.Event()

    # -- the lists ------------------------------------------------------------------------

    def _compile(self) -> None:
        """Compile the configured lists into the shared snapshot (atomically replaced)."""
        from dns_resolver.app import build_matcher
        from listsync.update import snapshot_path

        if self._tmpdir is None:
            # Only without a data_dir (with one, the reloader owns `<data_dir>/lists.snap`).
            self._tmpdir = tempfile.TemporaryDirectory(prefix="filterdns-workers-")
            self.snapshot = str(snapshot_path(self._tmpdir.name))
        started = time.monotonic()
        matcher = build_matcher(self.config)
        matcher.save_snapshot(self.snapshot)  # written to a temporary file, then renamed
        log.info("compiled the lists for the workers in %.2fs", time.monotonic() - started)

    def _start_reloader(self) -> None:
        """Take `<data_dir>/lists.snap` (built in a child process if there is none)."""
        from listsync.reloader import ListReloader

        self.reloader = ListReloader(self.config, lambda _path: self._new_snapshot.set())
        self.snapshot = self.reloader.require_snapshot()
        self._new_snapshot.clear()  # the start-up build: the workers map it when forked

    # -- workers --------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_end)
            status = 1
            try:
                status = _worker_main(
                    self.config, self.snapshot, index, write_end, self.handoff,
                    self._leads_link,
                )
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(status)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.children[pid] = index
        self._pipes[read_end] = index

    def _read_ports(self) -> None:
        for fd, index in list(self._pipes.items()):
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                with contextlib.suppress(ValueError):
                    self.metrics_ports[index] = int(data.split()[-1])
            os.close(fd)
            del self._pipes[fd]

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self, block: bool = False) -> list[tuple[int, int, bool]]:
        """Collect exited workers: [(index, exit status, whether it had started)]."""
        gone = []
        # Only the workers' pids: waitpid(-1) would also reap the list reloader's child,
        # which multiprocessing waits for itself.
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            index = self.children.pop(pid)
            started = self.metrics_ports.pop(index, None) is not None
            gone.append((index, os.waitstatus_to_exitcode(status), started))
            if block:
                break
        return gone

    def _stop_workers(self) -> int:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        worst = 0
        while self.children and time.monotonic() < deadline:
            for _, status, _ in self._reap():
                worst = worst or status
            time.sleep(0.02)
        if self.children:
            log.error("%d workers did not stop in %.0fs: killing them", len(self.children),
                      STOP_TIMEOUT)
            self._signal_all(signal.SIGKILL)
            while self.children:
                self._reap(block=True)
            worst = worst or 1
        return worst

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Compile, fork the workers, then supervise until SIGTERM/SIGINT."""
        handled = set(_HANDLED)
        # Blocked before forking, so no signal is lost between fork and the workers'
        # own handlers (App installs them; _worker_main unblocks).
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        try:
            if not self.given_snapshot:
                try:
                    if self.config.server.data_dir:
                        self._start_reloader()
                    else:
                        self._compile()
                except Exception as exc:
                    log.error("cannot load the lists: %s", exc)
                    return 1
            self.handoff.write(self.config)
            if self.config.subscribers.enabled:
                try:
                    self._build_subscribers()
                except Exception as exc:
                    log.error("cannot start the subscribers: %s", exc)
                    return 1
            if self.config.admin.enabled:
                try:
                    self._migrate_admin()
                except Exception as exc:
                    log.error("cannot start the admin API: %s", exc)
                    return 1
            if self.config.observed.enabled:
                from dns_resolver.observability.observed import leads_sockets

                self._leads_link = leads_sockets()
            for index in range(self.count):
                self._spawn(index)
            if self.reloader is not None:
                self.reloader.start()  # after forking: no thread is copied into a worker
            if self.subscribers is not None:
                self.subscribers.service.start(build=False)
            if not self._start_control():
                return 1  # said why; the workers are stopped below
            metrics_server = self._start_metrics()
            log.info("filterdns serving with %d workers (snapshot %s)", self.count,
                     self.snapshot)
            try:
                return self._supervise(handled)
            finally:
                if metrics_server is not None:
                    metrics_server.stop()
        finally:
            if self.reloader is not None:
                self.reloader.stop()
            if self.subscribers is not None:
                self.subscribers.stop()
            if self.children:
                self._stop_workers()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
            for sock in self._leads_link or ():
                sock.close()
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
            self._handoff_dir.cleanup()

    # -- subscribers (docs/subscribers.md) ----------------------------------------------

    def _build_subscribers(self) -> None:
        """The parent writes the subscribers' table the workers map: built before forking."""
        from listsync.update import config_data_dir
        from subscribers.runtime import Subscribers

        self.subscribers = Subscribers(self.config, config_data_dir(self.config))
        self.subscribers.service.build()

    # -- the admin database and RADIUS -------------------------------------------------

    def _migrate_admin(self) -> None:
        """The admin database is migrated once, before forking (the workers open it too,
        for the overrides, and must not race each other through the migrations)."""
        from listsync.update import config_data_dir
        from reports.store import Store, database_url

        Store(database_url(self.config, config_data_dir(self.config))).close()

    def _start_control(self) -> bool:
        """After forking: RADIUS, on an event loop of a thread of its own (the table's
        writer is this process). False when it cannot start (a port in use), as a single
        process would fail."""
        if self.subscribers is None or self.config.radius.listen is None:
            return True
        started = threading.Event()
        threading.Thread(target=self._control, args=(started,), name="control",
                         daemon=True).start()
        started.wait()
        for error in self._control_failed:
            log.error("%s", error)
        return not self._control_failed

    def _control(self, started: threading.Event) -> None:
        import asyncio

        from subscribers.radius import start_radius

        async def serve() -> None:
            where = self.config.radius.listen
            try:
                _transport, self.radius = await start_radius(self.config.radius, self.subscribers)
            except OSError as exc:
                self._control_failed.append(f"cannot listen for RADIUS on {where}: {exc}")
                return
            finally:
                started.set()
            log.info("RADIUS accounting on %s", where)
            await asyncio.Event().wait()  # until the process ends (a daemon thread)

        try:
            asyncio.run(serve())
        except Exception as exc:
            self._control_failed.append(f"the RADIUS thread failed: {exc}")
        finally:
            started.set()  # never leave the main thread waiting

    def _supervise(self, handled: set[int]) -> int:
        while True:
            info = signal.sigtimedwait(handled, 0.2)
            self._read_ports()
            if self._new_snapshot.is_set():
                self._new_snapshot.clear()
                self._signal_all(signal.SIGHUP)  # each worker re-maps the snapshot
            if info is None or info.si_signo == signal.SIGCHLD:
                self._read_ports()
                for index, status, started in self._reap():
                    if not started:
                        # It never served (a port in use, lists that cannot be mapped):
                        # restarting would fail the same way.
                        log.error("worker %d failed to start (status %d): stopping",
                                  index, status)
                        self._stop_workers()
                        return 1
                    self._restart(index, status)
                continue
            if info.si_signo == signal.SIGUSR1:
                if self.subscribers is not None:
                    self.subscribers.kick()  # worker 0's API changed the store
                continue
            if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("shutting down %d workers", len(self.children))
                return self._stop_workers()
            if info.si_signo == signal.SIGHUP:
                self._reload()

    def _restart(self, index: int, status: int) -> None:
        log.error("worker %d exited with status %d: restarting it", index, status)
        wait = self._last_restart + 1.0 - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # a worker that dies at start must not spin the parent
        self._last_restart = time.monotonic()
        self._spawn(index)

    def _reload(self) -> None:
        outcome = reread(self.source.load, self.config)
        if self.config_reloads is not None:
            self.config_reloads.labels(outcome.result).inc()
        if outcome.config is None:
            return  # the running configuration stays, lists included
        changed = outcome.config != self.config
        if changed:
            self.config = outcome.config  # restarted workers start with it too
            apply_logging(self.config)
            if self.subscribers is not None:
                # Renumbered before the workers take the new policy order.
                try:
                    self.subscribers.reconfigure(self.config)
                except ValueError as exc:
                    log.error("subscribers: %s", exc)
            self.handoff.write(self.config)
        if self.reloader is not None:
            self.reloader.update_config(self.config)  # the workers hear of a new snapshot
            if changed:
                self._signal_all(signal.SIGHUP)  # the configuration now, not after the lists
            return
        if not self.given_snapshot:
            try:
                self._compile()
            except Exception as exc:
                log.error("list reload failed, keeping the previous lists: %s", exc)
                if not changed:
                    return
        self._signal_all(signal.SIGHUP)

    # -- metrics --------------------------------------------------------------------------

    def _start_metrics(self) -> Any:
        addr = self.config.metrics.listen
        if addr is None:
            return None
        from prometheus_client import CollectorRegistry

        from dns_resolver.observability.metrics import config_reloads_counter, start_metrics_server

        registry = CollectorRegistry()
        registry.register(_WorkersCollector(self))
        if self.subscribers is not None:
            from subscribers.metrics import SubscriberCollector

            # The table's writer and the RADIUS listener are the supervisor's own.
            registry.register(SubscriberCollector(self.subscribers, lambda: self.radius))
        self.config_reloads = config_reloads_counter(registry)
        server = start_metrics_server(addr.host, addr.port, registry)
        log.info("metrics on http://%s/metrics (%d workers added up)", addr, self.count)
        return server

    def scrape(self) -> list[str]:
        """The Prometheus text of every worker that answers."""
        self._read_ports()
        texts = []
        for port in list(self.metrics_ports.values()):
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as reply:
                    texts.append(reply.read().decode())
            except OSError as exc:
                log.debug("worker metrics at %s: %s", url, exc)
        return texts


class _WorkersCollector:
    """Adds up the samples of every worker's /metrics at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric
        from prometheus_client.parser import text_string_to_metric_families

        families: dict[str, Any] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in self.supervisor.scrape():
            for family in text_string_to_metric_families(text):
                if family.name.removesuffix("_created") in _PARENT_OWNS:
                    continue
                families.setdefault(family.name, family)
                acc = values.setdefault(family.name, {})
                same = family.name in _SAME_IN_EVERY_WORKER
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if same:
                        acc[key] = sample.value
                    else:
                        acc[key] = acc.get(key, 0.0) + sample.value
        for name, family in families.items():
            out = Metric(name, family.documentation, family.type)
            for (sample_name, labels), value in values[name].items():
                out.add_sample(sample_name, dict(labels), value)
            yield out


def _worker_main(
    config: Config, snapshot: str, index: int, report_fd: int, handoff: ConfigHandoff,
    leads_link: tuple[socket.socket, socket.socket] | None = None,
) -> int:
    """One worker: the ordinary App on shared ports, lists from the snapshot, and on
    SIGHUP the configuration the parent validated."""
    from dns_resolver.app import App

    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
    app = App(_worker_config(config, index))
    if index == CONSOLE_WORKER:
        parent = os.getppid()

        def wake() -> None:
            # Coalesced: a burst of changes wakes the writer once or a few times.
            with contextlib.suppress(ProcessLookupError):
                os.kill(parent, signal.SIGUSR1)

        async def reload() -> dict[str, Any]:
            # The parent re-reads and validates the file and passes it on to every worker,
            # as for a SIGHUP from outside; the outcome is in its log and metrics.
            os.kill(parent, signal.SIGHUP)
            return {"reloaded": True, "config": "requested"}

        app.wake_subscribers = wake
        app.admin_reload = reload
    app.reread = lambda: handoff.read(index)
    app.share = WorkerShare(os.path.dirname(handoff.path), index, admin=config.admin.enabled)
    app.counts_config_reloads = False  # the parent counts
    app.load_matcher = snapshot_loader(snapshot)
    app.use_reloader = False  # the parent owns the reloader
    app.reuse_port = True
    if leads_link is not None:
        from dns_resolver.observability.observed import LeadsLink

        app.leads_link = LeadsLink(index == 0, *leads_link)

    def started(app: App) -> None:
        port = app.metrics_server.port if app.metrics_server is not None else 0
        with contextlib.suppress(OSError):
            os.write(report_fd, f"{port}\n".encode())
            os.close(report_fd)

    app.on_started = started
    sys.stdout.flush()
    return eventloop.run(app.run())


def serve(
    config: Config, snapshot: str | None = None, source: ConfigSource | None = None
) -> int:
    """Run `config` with `config.server.workers` processes; returns the exit status.
    `source` is what SIGHUP re-reads (default: `config.source` without flags)."""
    return Supervisor(config, config.server.workers, snapshot, source).run()


__all__ = ["ConfigHandoff", "Supervisor", "serve", "snapshot_loader"]

"""Builds the resolver from a `Config` and runs it until SIGTERM/SIGINT.

SIGHUP reloads the lists. With `server.data_dir` set, `listsync.reloader.ListReloader`
does it: sources are refreshed and compiled into `<data_dir>/lists.snap` in a child process
(its memory is returned when it exits) and the server only maps the new snapshot and swaps
it in; a valid snapshot on disk is served at once at start-up. Without data_dir the new
matcher is compiled in a worker thread so the event loop keeps answering with the old one,
then swapped in. Either way the cache is cleared, and a reload that fails keeps the old
lists and logs why.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dns_resolver.acl import Acl
from dns_resolver.blocking import Blocker
from dns_resolver.blockpage.recent import RecentBlocks
from dns_resolver.cache import Cache
from dns_resolver.resolver import Resolver
from dns_resolver.server import DnsServer
from dns_resolver.upstream import Forwarder
from fdconfig import Config

log = logging.getLogger(__name__)

ALLOWANCE_FILE = "allowances.sqlite"


def build_matcher(config: Config) -> Any:
    """Compile the configured lists into a `filtercore.Matcher` (`Config.list_specs`)."""
    from filtercore import Matcher

    return Matcher.from_lists(config.list_specs())


def build_policies(config: Config, matcher: Any, *, clock: Any = None) -> Any:
    """The `PolicyTable` of the config (None without `[policies]`).

    The allowance store is opened only when a policy has an allowance.
    """
    if not config.policy.enabled:
        return None
    from dns_resolver.policy import PolicyTable, list_categories

    store = None
    if any(p.allowances for p in config.policy.policies):
        from dns_resolver.allowance import AllowanceStore

        store = AllowanceStore(Path(config.policy.state_dir) / ALLOWANCE_FILE)
    return PolicyTable(
        config.policy,
        config.blocking,
        matcher.categories,
        list_categories(matcher),
        allowances=store,
        clock=clock or time.time,
    )


def list_entries(matcher: Any) -> dict[str, int]:
    """Entries per list name, from `Matcher.stats()`."""
    return {item["list"]: item["entries"] for item in matcher.stats()["lists"]}


def build_resolver(
    config: Config,
    matcher: Any,
    *,
    metrics: Any = None,
    querylog: Any = None,
    policies: Any = None,
) -> Resolver:
    """Wire the pipeline steps together as `config` says.

    `policies` is the `PolicyTable` from `build_policies` (None: one rule set for all).
    """
    cache_cfg = config.cache
    cache = None
    if cache_cfg.enabled:
        cache = Cache(
            cache_cfg.max_entries,
            min_ttl=cache_cfg.min_ttl,
            max_ttl=cache_cfg.max_ttl,
            negative_max_ttl=cache_cfg.negative_max_ttl,
            serve_stale=cache_cfg.serve_stale,
            stale_answer_ttl=cache_cfg.stale_answer_ttl,
            stale_max_age=cache_cfg.stale_max_age,
            prefetch=cache_cfg.prefetch,
            prefetch_threshold=cache_cfg.prefetch_threshold,
            prefetch_min_hits=cache_cfg.prefetch_min_hits,
            on_evict=metrics.cache_evicted if metrics is not None else None,
        )
    ups = config.upstream
    forwarder = Forwarder(
        [(a.host, a.port) for a in ups.servers],
        strategy=ups.strategy,
        timeout=ups.timeout,
        max_failures=ups.max_failures,
        retry_dead_after=ups.retry_dead_after,
        udp_size=config.server.udp_payload_size,
        observer=metrics,
    )
    blk = config.blocking
    blocker = Blocker(
        blk.mode,
        ipv4=blk.ipv4,
        ipv6=blk.ipv6,
        ttl=blk.ttl,
        filtered_categories=blk.filtered_categories,
    )
    return Resolver(
        matcher,
        forwarder,
        acl=Acl(config.access.allow, config.access.deny),
        cache=cache,
        blocker=blocker,
        udp_size=config.server.udp_payload_size,
        inspect_answers=blk.inspect_answers,
        metrics=metrics,
        querylog=querylog,
        policies=policies,
        recent_blocks=RecentBlocks() if policies is not None else None,
    )


class App:
    """The running resolver: listeners, metrics endpoint, signal handling."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # Workers and `serve --snapshot` load a compiled snapshot instead (workers.py).
        self.load_matcher: Callable[[], Any] = lambda: build_matcher(self.config)
        # The list reloader owns the lists when there is a data_dir to keep them in;
        # workers and `serve --snapshot` turn it off (their lists come from a given file).
        self.use_reloader = bool(config.server.data_dir)
        self.reloader: Any = None  # listsync.reloader.ListReloader while serving
        self.reuse_port = False  # set by workers.py: the workers share the port
        self.on_started: Callable[[App], None] | None = None  # workers.py reports ports
        self.metrics: Any = None
        self.metrics_server: Any = None
        self.querylog: Any = None
        self.resolver: Resolver | None = None
        self.server: DnsServer | None = None
        self.blockpage: Any = None
        self.admin: Any = None  # reports.server.AdminServer when [admin] enabled
        self.subscribers: Any = None  # subscribers.runtime.Subscribers when enabled
        self.radius: Any = None  # its RADIUS listener's transport
        self._tick: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._reloading = False

    def _build_metrics(self) -> Any:
        if not self.config.metrics.enabled:
            return None
        from dns_resolver.metrics import Metrics

        return Metrics()

    def _build_querylog(self) -> Any:
        if not self.config.querylog.enabled:
            return None
        from dns_resolver.querylog import QueryLog

        return QueryLog.from_config(self.config.querylog)

    async def run(self) -> int:
        """Serve until stopped; returns the process exit status."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.metrics = self._build_metrics()
        try:
            if self.use_reloader:
                matcher = await self._start_reloader(loop)
            else:
                matcher = await loop.run_in_executor(None, self.load_matcher)
        except Exception as exc:
            # A list that cannot be read or compiled: say which and why, no traceback.
            log.error("cannot load the lists: %s", exc)
            return 1
        self.querylog = self._build_querylog()
        policies = build_policies(self.config, matcher)
        self.resolver = build_resolver(
            self.config,
            matcher,
            metrics=self.metrics,
            querylog=self.querylog,
            policies=policies,
        )
        if self.config.subscribers.enabled and not await self._start_subscribers(policies):
            return 1
        if self.config.admin.enabled:
            from reports.server import AdminServer

            try:
                self.admin = AdminServer(
                    self.config,
                    resolver=self.resolver,
                    reload=self.reload,
                    subscribers=self.subscribers,
                )
                await self.admin.start()
            except Exception as exc:
                log.error("cannot start the admin API: %s", exc)
                return 1
        if policies is not None:
            self._schedule_tick()
        if self.config.blockpage.enabled:
            from dns_resolver.blockpage.server import BlockPageServer

            try:
                self.blockpage = BlockPageServer.from_config(
                    self.config, self.resolver, reuse_port=self.reuse_port
                )
            except OSError as exc:
                where = self.config.blockpage.listen
                log.error("cannot start the block page on %s: %s", where, exc)
                return 1
            self.blockpage.start()
            log.info("block page on http://%s/", self.blockpage.address)
        if self.metrics is not None:
            from dns_resolver.metrics import start_metrics_server

            self.metrics.lists_loaded(list_entries(matcher))
            if self.resolver.cache is not None:
                self.metrics.watch_cache_entries(self.resolver.cache.__len__)
            for upstream in self.resolver.forwarder.upstreams:
                self.metrics.upstream_healthy(upstream.name, True)
            addr = self.config.metrics.listen
            self.metrics_server = start_metrics_server(addr.host, addr.port, self.metrics.registry)
            log.info("metrics on http://%s/metrics", addr)
        self.server = DnsServer(
            self.resolver,
            [(a.host, a.port) for a in self.config.server.listen],
            tcp_idle_timeout=self.config.server.tcp_idle_timeout,
            fast_path=self.config.server.fast_path,
            reuse_port=self.reuse_port,
        )
        await self.server.start()
        if self.metrics is not None and self.server.fast is not None:
            # The C cache holds Python's entries and the answers C forwarded itself.
            fp = self.server.fast.fp
            self.metrics.watch_cache_entries(lambda: int(fp.entries))
        if self.reloader is not None:
            # Refresh timers only once clients are served: the first pass may download.
            self.reloader.start()
        if self.on_started is not None:
            self.on_started(self)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        log.info(
            "filterdns serving (%d upstreams, start-up %.2fs)",
            len(self.config.upstream.servers), time.monotonic() - started,
        )
        try:
            await self._stop.wait()
        finally:
            log.info("shutting down")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self.reloader is not None:
                # Off the loop: stop() joins the thread, which may be ending a child.
                await loop.run_in_executor(None, self.reloader.stop)
            await self.server.stop()
            if self.admin is not None:
                await self.admin.stop()
            if self.radius is not None:
                self.radius.close()
            if self.subscribers is not None:
                await asyncio.to_thread(self.subscribers.stop)
            if self._tick is not None:
                self._tick.cancel()
            if self.blockpage is not None:
                self.blockpage.stop()
            if self.resolver.policies is not None and self.resolver.policies.allowances:
                self.resolver.policies.allowances.close()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            if self.querylog is not None:
                self.querylog.close()
        return 0

    def stop(self) -> None:
        self._stop.set()

    async def _start_subscribers(self, policies: Any) -> bool:
        """`[subscribers]` (and `[radius]`): the store, the serving table, the feeds."""
        from listsync.update import config_data_dir
        from subscribers.runtime import Subscribers, serving_view

        if self.reuse_port:
            # One of several workers: the supervisor writes the table, feeds included.
            try:
                policies.subscribers = serving_view(self.config, config_data_dir(self.config))
            except Exception as exc:
                log.error("cannot map the subscribers' table: %s", exc)
                return False
            return True
        try:
            subs = Subscribers(self.config, config_data_dir(self.config), policies)
            await asyncio.to_thread(subs.start)
        except Exception as exc:
            log.error("cannot start the subscribers: %s", exc)
            return False
        self.subscribers = subs
        radius = None
        if self.config.radius.listen is not None:
            from subscribers.radius import start_radius

            try:
                self.radius, radius = await start_radius(self.config.radius, subs)
            except OSError as exc:
                log.error("cannot listen for RADIUS on %s: %s", self.config.radius.listen, exc)
                return False
            log.info("RADIUS accounting on %s", self.config.radius.listen)
        if self.metrics is not None:
            from subscribers.metrics import SubscriberCollector

            self.metrics.registry.register(SubscriberCollector(subs, radius))
        return True

    def _schedule_tick(self) -> None:
        """Recompute policy masks at each schedule boundary, so that subscribers (the fast
        path) hear of a change even when no query reaches the Python path."""
        assert self.resolver is not None and self.resolver.policies is not None
        table = self.resolver.policies
        table.refresh()
        loop = asyncio.get_running_loop()
        # Wake at the boundary (capped, so a clock change is noticed within an hour).
        delay = min(max(table.valid_until - time.time(), 0.0) + 0.01, 3600.0)
        self._tick = loop.call_later(delay, self._schedule_tick)

    async def _start_reloader(self, loop: asyncio.AbstractEventLoop) -> Any:
        """Create the list reloader and map its snapshot (built first if there is none)."""
        from filtercore import Matcher
        from listsync.reloader import ListReloader

        # Callbacks run on the reloader's thread: hand them to the event loop.
        self.reloader = ListReloader(
            self.config,
            lambda path: loop.call_soon_threadsafe(self._swap_snapshot, path),
            on_report=lambda report: loop.call_soon_threadsafe(self._count_reload, report),
        )
        try:
            path = await loop.run_in_executor(None, self.reloader.require_snapshot)
        except RuntimeError:
            self.reloader = None
            raise
        log.info("lists from the snapshot %s", path)
        return Matcher.from_snapshot(path)

    def _swap_snapshot(self, path: str) -> None:
        """Map a new snapshot (verified by the child) and swap it in."""
        from filtercore import Matcher

        if self.resolver is None:
            return  # the initial snapshot, reported by ensure_snapshot before serving
        try:
            matcher = Matcher.from_snapshot(path)
        except Exception as exc:
            log.error("list reload failed, keeping the previous lists: %s", exc)
            if self.metrics is not None:
                self.metrics.list_reload(False)
            return
        # replace_matcher keeps the overrides on top and clears the caches; the fast path
        # notices the new matcher before its next batch.
        self.resolver.replace_matcher(matcher)
        # A Matcher holds reference cycles: collect now so the old mapping goes now.
        gc.collect()
        if self.metrics is not None:
            self.metrics.lists_loaded(list_entries(matcher))
        log.info("lists reloaded from %s", path)

    def _count_reload(self, report: Any) -> None:
        # Each source's outcome is logged by listsync; rejected downloads are counted here.
        for source in report.sources:
            if self.metrics is not None and source.status != "cached":
                self.metrics.list_source_update(source.source, source.result)
        if self.resolver is None:
            return  # the start-up build: not a reload
        if report.error:
            log.error("list reload failed, keeping the previous lists: %s", report.error)
        if self.metrics is not None and (report.compiled or report.error):
            self.metrics.list_reload(report.error is None)

    def _on_sighup(self) -> None:
        if self.reloader is not None:
            log.info("SIGHUP: refreshing the lists")
            self.reloader.request_reload()
            return
        if self._reloading:
            log.info("SIGHUP: a reload is already running")
            return
        self._reloading = True
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(lambda _t: setattr(self, "_reloading", False))

    async def reload(self) -> bool:
        """Recompile the lists off the event loop and swap them in. False if it failed.

        With the list reloader the refresh is only requested (True): it runs in a child
        process and its outcome shows in the logs and the reload metrics.
        """
        if self.reloader is not None:
            self.reloader.request_reload()
            return True
        loop = asyncio.get_running_loop()
        log.info("reloading lists")
        try:
            matcher = await loop.run_in_executor(None, self.load_matcher)
        except Exception as exc:
            log.error("list reload failed, keeping the previous lists: %s", exc)
            if self.metrics is not None:
                self.metrics.list_reload(False)
            return False
        assert self.resolver is not None
        self.resolver.replace_matcher(matcher)
        if self.metrics is not None:
            self.metrics.list_reload(True)
            self.metrics.lists_loaded(list_entries(matcher))
        log.info("lists reloaded")
        return True

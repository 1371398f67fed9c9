"""Builds the resolver from a `Config` and runs it until SIGTERM/SIGINT.

SIGHUP (and POST /api/reload) re-reads the configuration file (`reconfigure.py`): a file
that validates is put in force at once (`App.apply_config`; what needs a restart is logged
and kept), then the lists it names are reloaded. With `server.data_dir` set,
`listsync.reloader.ListReloader` does that: sources are refreshed and compiled into
`<data_dir>/lists.snap` in a child process (its memory is returned when it exits) and the
server only maps the new snapshot and swaps it in; a valid snapshot on disk is served at
once at start-up. Without data_dir the new matcher is compiled in a worker thread so the
event loop keeps answering with the old one, then swapped in. Either way the cache is
cleared, and a reload that fails keeps the old lists and logs why.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from dns_resolver.blockpage.recent import RecentBlocks
from dns_resolver.reconfigure import ConfigSource, Reread, apply_logging, reread
from dns_resolver.resolver import Resolver
from dns_resolver.steps.acl import Acl
from dns_resolver.steps.blocking import Blocker
from dns_resolver.steps.cache import Cache
from dns_resolver.steps.local import LocalData, rule_servers
from dns_resolver.steps.ratelimit import RateLimitCollector, build_limiter
from dns_resolver.transports import listeners
from dns_resolver.transports.certs import CertificateError
from dns_resolver.transports.server import DnsServer
from dns_resolver.upstreams.upstream import Forwarder, upstreams_of
from fdconfig import Address, Config

log = logging.getLogger(__name__)

ALLOWANCE_FILE = "allowances.sqlite"
RETRY_AFTER_ENV = "FILTERDNS_RETRY_AFTER"
"""Seconds before a failed list download is first tried again (default 60; tests)."""


def build_matcher(config: Config) -> Any:
    """Compile the configured lists into a `filtercore.Matcher` (`Config.list_specs`)."""
    from filtercore import Matcher

    return Matcher.from_lists(config.list_specs())


def build_policies(config: Config, matcher: Any, *, clock: Any = None, store: Any = None) -> Any:
    """The `PolicyTable` of the config (None without `[policies]`).

    The allowance store is opened only when a policy has an allowance; `store` is the one
    already open (a config reload keeps counting in it).
    """
    if not config.policy.enabled:
        return None
    from dns_resolver.steps.policy import PolicyTable, list_categories

    if not any(p.allowances for p in config.policy.policies):
        store = None
    elif store is None:
        from dns_resolver.steps.allowance import AllowanceStore

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


def upstream_sets(resolver: Resolver) -> list[Forwarder]:
    """Every upstream set the resolver forwards to: the default one and the forwarding
    rules' (each once)."""
    if resolver.local is None:
        return [resolver.forwarder]
    return list(resolver.local.forwarders())


def upstream_names(resolver: Resolver) -> list[str]:
    """The names of the upstreams of every set, each once (the health gauge's labels)."""
    names = (u.name for forwarder in upstream_sets(resolver) for u in forwarder.upstreams)
    return list(dict.fromkeys(names))


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

    def upstream_set(servers: Sequence[Address]) -> Forwarder:
        # [[forward]] rules' servers get [upstream]'s strategy, timeout and health.
        return Forwarder(
            upstreams_of(ups, servers),
            strategy=ups.strategy,
            timeout=ups.timeout,
            max_failures=ups.max_failures,
            retry_dead_after=ups.retry_dead_after,
            udp_size=config.server.udp_payload_size,
            observer=metrics,
        )

    forwarder = upstream_set(ups.servers)
    local = LocalData(config, forwarder, {s: upstream_set(s) for s in rule_servers(config)})
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
        local=local,
        ratelimit=build_limiter(config.ratelimit),
    )


class App:
    """The running resolver: listeners, metrics endpoint, signal handling."""

    def __init__(self, config: Config, source: ConfigSource | None = None) -> None:
        self.config = config
        # What a config reload reads (workers.py: the configuration the parent validated).
        self.reread: Callable[[], Config] = (source or ConfigSource(config.source)).load
        # With workers the parent counts config reloads (it re-reads and validates).
        self.counts_config_reloads = True
        # Workers and `serve --snapshot` load a compiled snapshot instead (workers.py).
        self.load_matcher: Callable[[], Any] = lambda: build_matcher(self.config)
        # The list reloader owns the lists when there is a data_dir to keep them in;
        # workers and `serve --snapshot` turn it off (their lists come from a given file).
        self.use_reloader = bool(config.server.data_dir)
        self.reloader: Any = None  # listsync.reloader.ListReloader while serving
        self.reuse_port = False  # set by workers.py: the workers share the port
        # Set by workers.py: how newly observed domains reach the worker that counts them.
        self.leads_link: Any = None
        self.on_started: Callable[[App], None] | None = None  # workers.py reports ports
        # POST /api/reload; with workers it asks the supervisor, which re-reads the file.
        self.admin_reload: Callable[[], Awaitable[dict[str, Any]]] = self.reload_config
        # With workers: wakes the supervisor's subscriber table writer after an API change.
        self.wake_subscribers: Callable[[], None] | None = None
        self.metrics: Any = None
        self.metrics_server: Any = None
        self.querylog: Any = None
        self.dnstap: Any = None  # dns_resolver.observability.dnstap.Dnstap when [dnstap] is on
        self.resolver: Resolver | None = None
        self.server: DnsServer | None = None
        self.encrypted: Any = None  # listeners.EncryptedListeners when DoT/DoH are on
        self.blockpage: Any = None
        self.admin: Any = None  # reports.server.AdminServer when [admin] enabled
        self.observer: Any = None  # observability.observed.Observer when [observed] enabled
        self.console: Any = None  # observability.consolefeed.ConsoleFeed when [console] enabled
        # subscribers.runtime.Subscribers when enabled (SubscriberWrites in the worker of
        # several that serves the admin listener; the others: None)
        self.subscribers: Any = None
        # One of several workers (workers.py): what it shares with the console's worker.
        self.share: Any = None  # dns_resolver.workershare.WorkerShare
        self._follows: list[asyncio.Task[None]] = []
        self.radius: Any = None  # its RADIUS listener's transport
        self._tick: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._arrived: list[tuple[str, int]] = []  # sources fetched by the last update
        self._reload_lock = asyncio.Lock()  # SIGHUP and /api/reload, one at a time
        self._reloads: set[asyncio.Task[Any]] = set()

    def _build_metrics(self) -> Any:
        if not self.config.metrics.enabled:
            return None
        from dns_resolver.observability.metrics import Metrics

        return Metrics()

    @staticmethod
    def _build_querylog(config: Config) -> Any:
        if not config.querylog.enabled:
            return None
        from dns_resolver.observability.querylog import QueryLog

        return QueryLog.from_config(config.querylog)

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
        if self.config.console.enabled and self.config.querylog.enabled:
            from dns_resolver.observability.consolefeed import ConsoleFeed

            # The console's rows are made by a writer process; the link queues them.
            self.console = ConsoleFeed(self.config, share=self.share)
            self.querylog = self.console.link
            if self.metrics is not None:
                self.metrics.registry.register(self.console)
        else:
            self.querylog = self._build_querylog(self.config)
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
        if self.share is not None:
            self._follow_share(policies)
        if self.console is not None:
            self.console.attach(self.querylog, self.resolver)
        if self.config.admin.enabled:
            from reports.server import AdminServer

            try:
                self.admin = AdminServer(
                    self.config,
                    resolver=self.resolver,
                    reload=self.admin_reload,
                    console=self.console,
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
            from dns_resolver.observability.metrics import start_metrics_server

            self.metrics.lists_loaded(list_entries(matcher))
            if self.resolver.cache is not None:
                self.metrics.watch_cache_entries(self.resolver.cache.__len__)
            self.metrics.upstreams_in_use(upstream_names(self.resolver))
            if self.resolver.ratelimit is not None:
                self.metrics.registry.register(RateLimitCollector(self.resolver.ratelimit))
            addr = self.config.metrics.listen
            try:
                self.metrics_server = start_metrics_server(
                    addr.host, addr.port, self.metrics.registry
                )
            except OSError as exc:
                raise OSError(exc.errno, f"cannot serve metrics on {addr}: {exc.strerror}") from exc
            log.info("metrics on http://%s/metrics", addr)
        if self.config.dnstap.enabled:
            self._start_dnstap(self.resolver)
        self.server = DnsServer(
            self.resolver,
            [(a.host, a.port) for a in self.config.server.listen],
            tcp_idle_timeout=self.config.server.tcp_idle_timeout,
            tcp_max_connections=self.config.server.tcp_max_connections,
            tcp_max_inflight=self.config.server.tcp_max_inflight,
            fast_path=self.config.server.fast_path,
            reuse_port=self.reuse_port,
            trusted_proxies=self.config.server.trusted_proxies,
            proxy_required=self.config.server.proxy_required,
        )
        if listeners.wanted(self.config):
            try:
                self.encrypted = listeners.EncryptedListeners(
                    self.config, self.server, reuse_port=self.reuse_port
                )
            except CertificateError as exc:
                log.error("cannot start the encrypted listeners: %s", exc)
                return 2
        if self.encrypted is not None:
            # Before plain DNS: a server that answers on `listen` serves all its transports.
            await self.encrypted.start()
            if self.metrics is not None:
                self.metrics.registry.register(self.encrypted.stats)
        await self.server.start()
        if self.metrics is not None and self.server.fast is not None:
            # The C cache holds Python's entries and the answers C forwarded itself.
            fp = self.server.fast.fp
            self.metrics.watch_cache_entries(lambda: int(fp.entries))
        if self.config.observed.enabled:
            from dns_resolver.observability.observed import start_observer

            self.observer = start_observer(
                self.config, self.resolver, self.server.fast, self.admin, self.leads_link
            )
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
        self._say_where(matcher)
        try:
            await self._stop.wait()
        finally:
            log.info("shutting down")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self.reloader is not None:
                # Off the loop: stop() joins the thread, which may be ending a child.
                await loop.run_in_executor(None, self.reloader.stop)
            if self.encrypted is not None:
                await self.encrypted.stop()
            await self.server.stop()
            for forwarder in upstream_sets(self.resolver):
                await forwarder.close()
            if self.observer is not None:
                await self.observer.stop()
            if self.admin is not None:
                await self.admin.stop()
            if self.radius is not None:
                self.radius.close()
            policies = self.resolver.policies
            if policies is not None and policies.subscribers is not None:
                await asyncio.to_thread(policies.subscribers.close)
            if self.subscribers is not None:
                await asyncio.to_thread(self.subscribers.stop)
            if self._tick is not None:
                self._tick.cancel()
            for task in self._follows:
                task.cancel()
            if self.blockpage is not None:
                self.blockpage.stop()
            if self.resolver.policies is not None and self.resolver.policies.allowances:
                self.resolver.policies.allowances.close()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            if self.querylog is not None:
                self.querylog.close()
            if self.dnstap is not None:
                await loop.run_in_executor(None, self.dnstap.close)
            if self.console is not None:
                self.console.close()
        return 0

    def _follow_share(self, policies: Any) -> None:
        """One of several workers: the console worker's policy switches, and its
        reviewers' overrides unless this is the console worker (workershare.py)."""
        from dns_resolver.workershare import follow

        share = self.share
        if policies is not None:
            share.apply_switches(policies)  # in force before the first answer

        def switches() -> None:
            table = self.resolver.policies if self.resolver is not None else None
            if table is not None and share.apply_switches(table):
                log.info("policy switches from the console's worker applied")

        loop = asyncio.get_running_loop()
        self._follows = [loop.create_task(follow(share.switches_file(), switches))]
        if share.admin and not share.serves_console:
            from listsync.update import config_data_dir
            from reports.overrides import FILE_NAME, OverrideMatcher

            path = config_data_dir(self.config) / FILE_NAME

            def overrides() -> None:
                assert self.resolver is not None
                self.resolver.set_overrides(OverrideMatcher.load(path))
                log.info("reviewers' overrides from the console's worker applied")

            self._follows.append(loop.create_task(follow(path, overrides)))

    def _start_dnstap(self, resolver: Resolver) -> None:
        from dns_resolver.observability.dnstap import Dnstap

        self.dnstap = Dnstap(self.config.dnstap, self.config.querylog.anonymize)
        resolver.dnstap = self.dnstap
        if self.dnstap.forwarders:
            for forwarder in upstream_sets(resolver):
                forwarder.tap = self.dnstap
        if self.metrics is not None:
            self.metrics.registry.register(self.dnstap)
        log.info("dnstap to %s", self.dnstap.target)

    def stop(self) -> None:
        self._stop.set()

    def _say_where(self, matcher: Any) -> None:
        """Once at start-up: what protects right now, where the state is, how to try it."""
        from listsync.update import config_data_dir

        local = [lc for lc in self.config.lists if not lc.url]
        entries = list_entries(matcher)
        # A tree's lists are named "<list>/<folder>": count them under their list.
        in_service = {
            name: sum(n for key, n in entries.items() if key.split("/")[0] == name)
            for name in dict.fromkeys(lc.name or "" for lc in self.config.lists if lc.url)
        }
        names = sum(entries.values()) - sum(in_service.values())
        parts = [f"{'bundled' if self.config.source is None else 'local'}: {names:,} names "
                 f"({len(local)} lists)"]
        waiting = []
        for name, count in in_service.items():
            if count:
                parts.append(f"{name}: {count:,} names")
            else:
                waiting.append(name)
        if waiting:
            how = "offline: not downloaded" if self.config.server.offline else "downloading"
            parts.append(f"{', '.join(waiting)}: {how}")
        log.info("lists in service: %s", "; ".join(parts))
        first = self.config.server.listen[0]
        port = "" if first.port == 53 else f" -p {first.port}"
        log.info(
            "state in %s; try it: dig @%s%s example.com",
            config_data_dir(self.config), first.host, port,
        )

    async def _start_subscribers(self, policies: Any) -> bool:
        """`[subscribers]` (and `[radius]`): the store, the serving table, the feeds."""
        from listsync.update import config_data_dir
        from subscribers.runtime import Subscribers, serving_view

        if self.reuse_port:
            # One of several workers: the supervisor writes the table and hears RADIUS;
            # the worker with the admin listener writes the API's changes to the store.
            try:
                policies.subscribers = serving_view(self.config, config_data_dir(self.config))
                if self.config.admin.enabled:
                    from subscribers.runtime import SubscriberWrites

                    assert self.wake_subscribers is not None
                    self.subscribers = SubscriberWrites(
                        self.config, config_data_dir(self.config), self.wake_subscribers
                    )
            except Exception as exc:
                log.error("cannot map the subscribers' table: %s", exc)
                return False
            if self.metrics is not None:
                self.metrics.registry.register(policies.subscribers.allowances)
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
            self.metrics.registry.register(policies.subscribers.allowances)
        return True

    def _schedule_tick(self) -> None:
        """Recompute policy masks at each schedule boundary, so that subscribers (the fast
        path) hear of a change even when no query reaches the Python path."""
        assert self.resolver is not None and self.resolver.policies is not None
        table = self.resolver.policies
        if self._tick is None:
            # A console pause or block-now moves the next boundary closer: wake for it.
            loop = asyncio.get_running_loop()
            table.subscribe(lambda _view: loop.call_soon_threadsafe(self._arm_tick))
            share = self.share
            if share is not None and share.serves_console:
                # The console's switches reach the other workers (workershare.py).
                table.subscribe(lambda _view: share.write_switches(table))
        table.refresh()
        self._arm_tick()

    def _arm_tick(self) -> None:
        assert self.resolver is not None and self.resolver.policies is not None
        table = self.resolver.policies
        if self._tick is not None:
            self._tick.cancel()
        loop = asyncio.get_running_loop()
        # Wake at the boundary (capped, so a clock change is noticed within an hour).
        delay = min(max(table.valid_until - time.time(), 0.0) + 0.01, 3600.0)
        self._tick = loop.call_later(delay, self._schedule_tick)

    async def _start_reloader(self, loop: asyncio.AbstractEventLoop) -> Any:
        """Create the list reloader and map its snapshot (built first if there is none)."""
        from filtercore import Matcher
        from listsync.reloader import ListReloader

        # Callbacks run on the reloader's thread: hand them to the event loop.
        retry = float(os.environ.get(RETRY_AFTER_ENV) or 60.0)
        self.reloader = ListReloader(
            self.config,
            lambda path: loop.call_soon_threadsafe(self._swap_snapshot, path),
            on_report=lambda report: loop.call_soon_threadsafe(self._count_reload, report),
            retry_after=retry,
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
        for name, entries in self._arrived:
            log.info("%s: %s name%s, in service", name, f"{entries:,}", "s"[: entries != 1])
        self._arrived = []

    def _count_reload(self, report: Any) -> None:
        from listsync.update import NOT_TRIED

        # Each source's outcome is logged by listsync; rejected downloads are counted here.
        for source in report.sources:
            if self.metrics is not None and source.status not in NOT_TRIED:
                self.metrics.list_source_update(source.source, source.result)
        if self.resolver is None:
            return  # the start-up build: not a reload
        # Said once the new snapshot is mapped (_swap_snapshot runs right after this).
        self._arrived = [
            (s.source, s.entries or 0) for s in report.sources if s.status == "fetched"
        ]
        if report.error:
            log.error("list reload failed, keeping the previous lists: %s", report.error)
        elif not report.compiled:
            log.info("lists checked: none changed")
        if self.metrics is not None and (report.compiled or report.error):
            self.metrics.list_reload(report.error is None)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: re-reading the configuration")
        # Each signal gets its reload, in order (a worker hears of a new configuration
        # and then of a new snapshot): reload_config takes them one at a time.
        task = asyncio.get_running_loop().create_task(self.reload_config())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload_config(self) -> dict[str, Any]:
        """Re-read the configuration (SIGHUP, POST /api/reload), put it in force, then
        reload the lists it names. A file that does not validate changes nothing.

        Returns the admin API's answer: `reloaded` (the lists' outcome, as `reload`),
        `config` ("applied" or "rejected"), and `error` or `restart_needed` when any.
        """
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(None, reread, self.reread, self.config)
            if outcome.config is not None and outcome.config != self.config:
                try:
                    self.apply_config(outcome.config)
                except Exception as exc:  # e.g. a query log or hosts file that cannot be opened
                    log.error("config reload failed, keeping the running configuration: %s",
                              exc)
                    outcome = Reread(None, error=str(exc))
            elif outcome.config is not None:
                self.reload_local()  # the same file: its hosts files may have changed
            if outcome.config is not None and self.encrypted is not None:
                self.encrypted.reload(self.config)  # the certificate files are read again
            if self.counts_config_reloads and self.metrics is not None:
                self.metrics.config_reload(outcome.result)
            if outcome.config is None:
                return {"reloaded": False, **outcome.as_dict()}
            if self.reloader is not None:
                self.reloader.update_config(self.config)  # refreshes the sources now
                lists = True
            else:
                lists = await self.reload()
            return {"reloaded": lists, **outcome.as_dict()}

    def apply_config(self, config: Config) -> None:
        """Serve with `config` from now on: its restart-only keys are the running ones
        (`reconfigure.reread`). Runs on the event loop, so between two fast path batches;
        the caches start empty. The lists are reloaded by the caller.

        The new parts are built first: when one cannot be (the query log's file), this
        raises and the running configuration stays whole.
        """
        resolver = self.resolver
        assert resolver is not None
        querylog = self.querylog
        if config.querylog != self.config.querylog:
            if self.console is not None and config.querylog.enabled:
                querylog = self.console.relink(config)
            else:
                querylog = self._build_querylog(config)
        store = resolver.policies.allowances if resolver.policies is not None else None
        old_sets = upstream_sets(resolver)
        try:
            policies = build_policies(config, resolver.base_matcher, store=store)
            fresh = build_resolver(
                config,
                resolver.base_matcher,
                metrics=self.metrics,
                querylog=querylog,
                policies=policies,
            )
        except Exception:
            if querylog is not None and querylog is not self.querylog:
                querylog.close()
            raise
        if policies is not None and resolver.policies is not None:
            # The same subscribers' table, which its writer renumbers for the new order.
            policies.subscribers = resolver.policies.subscribers
        if self.subscribers is not None:
            self.subscribers.reconfigure(config, policies)
        self.config = config
        apply_logging(config)
        if self.console is not None and querylog is not None and querylog is not self.querylog:
            # Before the fast path takes the new log: it asks whether the log has sinks.
            self.console.attach(querylog, resolver)
        if store is not None and (policies is None or policies.allowances is not store):
            store.close()
        resolver.take_settings(fresh)
        if self.dnstap is not None and self.dnstap.forwarders:
            for forwarder in upstream_sets(resolver):  # the new sets write them too
                forwarder.tap = self.dnstap
        if self.server is not None:
            self.server.set_tcp_limits(
                config.server.tcp_idle_timeout,
                config.server.tcp_max_connections,
                config.server.tcp_max_inflight,
            )
            if self.server.fast is not None:
                self.server.fast.reconfigure()
            elif self.metrics is not None:
                cache = resolver.cache
                self.metrics.watch_cache_entries(cache.__len__ if cache is not None else lambda: 0)
        if querylog is not self.querylog:
            if self.querylog is not None:
                self.querylog.close()
            self.querylog = querylog
        if self.metrics is not None:
            self.metrics.upstreams_in_use(upstream_names(resolver))
        self._close_later(old_sets)
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if policies is not None:
            self._schedule_tick()
        log.info("configuration applied from %s", config.source or "the built-in defaults")

    def _close_later(self, forwarders: list[Forwarder]) -> None:
        """Close replaced upstream sets' connections (DoT, DoH) once the queries still in
        flight on them have had their answer or their timeouts."""
        if not forwarders:
            return
        grace = max(f.timeout * max(len(f.upstreams), 1) for f in forwarders)
        loop = asyncio.get_running_loop()

        def close() -> None:
            for forwarder in forwarders:
                task = loop.create_task(forwarder.close())
                self._reloads.add(task)
                task.add_done_callback(self._reloads.discard)

        loop.call_later(grace, close)

    def reload_local(self) -> None:
        """Rebuild the local data (the hosts files are read again); the rules keep their
        upstream sets and health. A file that cannot be read keeps the old data."""
        if self.resolver is None or self.resolver.local is None:
            return
        old = self.resolver.local
        try:
            local = LocalData(self.config, old.default, old.forwarders_by_servers)
        except (OSError, ValueError) as exc:
            log.error("hosts files not reloaded, keeping the previous ones: %s", exc)
            return
        self.resolver.set_local(local)
        log.info("local records reloaded")

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

"""Builds the resolver from a `Config` and runs it until SIGTERM/SIGINT.

SIGHUP reloads the lists: the new matcher is compiled in a worker thread so the event loop
keeps answering with the old one, then swapped in (and the cache cleared). A reload that
fails keeps the old lists and logs why.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from dns_resolver.acl import Acl
from dns_resolver.blocking import Blocker
from dns_resolver.cache import Cache
from dns_resolver.config import Config
from dns_resolver.resolver import Resolver
from dns_resolver.server import DnsServer
from dns_resolver.upstream import Forwarder

log = logging.getLogger(__name__)


def build_matcher(config: Config) -> Any:
    """Compile the configured lists into a `filtercore.Matcher`."""
    from filtercore import Matcher

    return Matcher.from_lists(config.list_specs())


def list_entries(matcher: Any) -> dict[str, int]:
    """Entries per list name, from `Matcher.stats()`."""
    return {item["list"]: item["entries"] for item in matcher.stats()["lists"]}


def build_resolver(
    config: Config, matcher: Any, *, metrics: Any = None, querylog: Any = None
) -> Resolver:
    """Wire the pipeline steps together as `config` says."""
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
    )


class App:
    """The running resolver: listeners, metrics endpoint, signal handling."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics: Any = None
        self.metrics_server: Any = None
        self.querylog: Any = None
        self.resolver: Resolver | None = None
        self.server: DnsServer | None = None
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
            matcher = await loop.run_in_executor(None, build_matcher, self.config)
        except Exception as exc:
            # A list that cannot be read or compiled: say which and why, no traceback.
            log.error("cannot load the lists: %s", exc)
            return 1
        self.querylog = self._build_querylog()
        self.resolver = build_resolver(
            self.config, matcher, metrics=self.metrics, querylog=self.querylog
        )
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
        )
        await self.server.start()
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
            await self.server.stop()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            if self.querylog is not None:
                self.querylog.close()
        return 0

    def stop(self) -> None:
        self._stop.set()

    def _on_sighup(self) -> None:
        if self._reloading:
            log.info("SIGHUP: a reload is already running")
            return
        self._reloading = True
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(lambda _t: setattr(self, "_reloading", False))

    async def reload(self) -> bool:
        """Recompile the lists off the event loop and swap them in. False if it failed."""
        loop = asyncio.get_running_loop()
        log.info("reloading lists")
        try:
            matcher = await loop.run_in_executor(None, build_matcher, self.config)
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

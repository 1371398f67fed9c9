"""The admin API listener: runs in `filterdns serve`'s event loop, or alone.

    admin = AdminServer(config, resolver=resolver, reload=app.reload_config)
    await admin.start()        # database migrated, overrides in force, listening
    ...
    await admin.stop()

With a resolver, the overrides go into it (`Resolver.set_overrides`) and verdicts come
from it; without one (`filterdns admin serve`) verdicts show the overrides only. Every
`SYNC_INTERVAL` seconds the override table is checked for changes made by other nodes
sharing the database, so a decision taken anywhere shows on every node within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from reports.api import make_app
from reports.console_pages import FEED, ConsoleData
from reports.ratelimit import RateLimiter
from reports.service import AdminService
from reports.store import Store, database_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fdconfig import Config

log = logging.getLogger(__name__)

SYNC_INTERVAL = 2.0
"""Seconds between checks for overrides decided elsewhere (one cheap query each)."""


class AdminServer:
    """The admin API of one config: storage, service and HTTP listener.

    Args:
        config: the loaded config (`[admin]`, `[reports]`, `server.data_dir`).
        resolver: the running `Resolver`, or None.
        reload: the app's reload (`App.reload_config`), or None.
        data_dir: overrides the config's data directory (`--data-dir`).
        port: overrides `admin.listen`'s port (0 = any free one; tests).
        console: the resolver's `ConsoleFeed` (statistics and query-log store), or None:
            then, with `[console]` enabled, the store is read from its folder.
        subscribers: the running `subscribers.runtime.Subscribers` (or `SubscriberWrites`
            in the worker of several that serves this listener), whose provisioning API
            is mounted here, or None.
    """

    def __init__(
        self,
        config: Config,
        *,
        resolver: Any = None,
        reload: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        data_dir: str | Path | None = None,
        port: int | None = None,
        console: Any = None,
        subscribers: Any = None,
    ) -> None:
        from listsync.update import config_data_dir

        self.config = config
        self.resolver = resolver
        self.reload = reload
        self.subscribers = subscribers  # subscribers.runtime.Subscribers: its API routes
        self.data_dir = Path(data_dir) if data_dir is not None else config_data_dir(config)
        self.host = config.admin.listen.host
        self.port = config.admin.listen.port if port is None else port
        self.store: Store | None = None
        self.console = console
        self.service: AdminService | None = None
        self._runner: web.AppRunner | None = None
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open (and migrate) the database, put the overrides in force, listen."""
        url = database_url(self.config, self.data_dir)
        self.store = await asyncio.to_thread(Store, url)
        reports = self.config.reports
        resolver = self.resolver
        self.service = AdminService(
            self.store,
            self.data_dir,
            limiter=RateLimiter(reports.rate_per_minute / 60.0, reports.burst),
            matcher=(lambda: resolver.matcher) if resolver is not None else None,
            on_overrides=resolver.set_overrides if resolver is not None else None,
            reload=self.reload,
        )
        await self.service.publish_overrides()
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())
        app = make_app(self.service, reports.allow, reports.trusted_proxies)
        app[FEED] = self._console_data()
        if self.subscribers is not None:
            from subscribers.api import add_routes

            add_routes(app, self.subscribers)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self._runner.addresses:  # port 0 asked for any free port: say which
            self.port = self._runner.addresses[0][1]
        log.info("admin API on http://%s:%d/ (review page /review)", self.host, self.port)

    def _console_data(self) -> ConsoleData:
        if self.console is not None:
            return ConsoleData(
                self.console.stats, self.console.store, self.resolver, self.config, self.console
            )
        c = self.config.console
        if c.enabled and c.store:
            from dns_resolver.observability.querystore import QueryStore

            return ConsoleData(None, QueryStore(c.store_dir), self.resolver, self.config)
        return ConsoleData(None, None, self.resolver, self.config)

    async def _sync_loop(self) -> None:
        """Pick up overrides decided on other nodes sharing the database (PostgreSQL)."""
        assert self.service is not None
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                if await self.service.sync_overrides():
                    log.info("overrides changed in the database: reloaded them")
            except Exception as exc:  # a database hiccup must not end the loop
                log.warning("cannot check the overrides in the database: %s", exc)

    async def stop(self) -> None:
        """Stop listening and close the database."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.close()
            self.store = None


async def serve_forever(config: Config, data_dir: str | None = None) -> int:
    """`filterdns admin serve`: the admin API alone until SIGTERM/SIGINT."""
    import signal

    server = AdminServer(config, data_dir=data_dir)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0

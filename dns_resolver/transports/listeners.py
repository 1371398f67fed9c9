"""The encrypted listeners of one process: DoT (`server.listen_tls`), DoH
(`server.listen_https`) and DoQ (`server.listen_quic`, listen_quic.py), their shared TLS
(`certs.ServerTls`), counters and upkeep (the certificate files polled for changes, the
session ticket key rotated)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from dns_resolver.transports.certs import ServerTls
from dns_resolver.transports.dohpath import doh_listeners
from dns_resolver.transports.dotpath import CDotListener, dot_listeners
from dns_resolver.transports.listen_quic import DoqListener
from dns_resolver.transports.stream import ListenerStats, StreamListener
from fdconfig import Config

if TYPE_CHECKING:
    from dns_resolver.transports.server import DnsServer

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""How often the certificate files are checked for changes on disk."""


def wanted(config: Config) -> bool:
    """Whether `config` asks for an encrypted listener this module serves."""
    return bool(
        config.server.listen_tls or config.server.listen_https or config.server.listen_quic
    )


class EncryptedListeners:
    """Builds, starts, reloads and stops the DoT and DoH listeners of `config`.

    Raises `certs.CertificateError` from the constructor when the certificate cannot be
    loaded."""

    def __init__(self, config: Config, server: DnsServer, *, reuse_port: bool = False) -> None:
        self.tls = ServerTls(config.tls)
        self.stats = ListenerStats()
        self.listeners: list[StreamListener | DoqListener | CDotListener] = [
            *dot_listeners(
                server, config.server.listen_tls, self.tls, self.stats, reuse_port=reuse_port
            )
        ] + [
            *doh_listeners(
                server, config.server.listen_https, self.tls, self.stats, reuse_port=reuse_port
            )
        ] + [
            DoqListener(server, a.host, a.port, self.tls, self.stats, reuse_port=reuse_port)
            for a in config.server.listen_quic
        ]
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on every address; OSError (naming it) when one cannot be bound."""
        for listener in self.listeners:
            try:
                await listener.start()
            except OSError:
                await self.stop()
                raise
            name = {"tls": "DNS over TLS", "https": "DNS over HTTPS"}.get(
                listener.transport, "DNS over QUIC"
            )
            log.info("listening on %s port %d (%s)", listener.host, listener.port, name)
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for listener in self.listeners:
            await listener.stop()

    def reload(self, config: Config) -> None:
        """A config reload (SIGHUP): `[tls]` as it is now, the files read again. New
        connections use it; open ones keep theirs."""
        if self.tls.reload(config.tls):
            log.info("TLS certificate and settings reloaded")

    def addresses(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of each listener (the ports bound, for port 0)."""
        return [(li.transport, li.host, li.port) for li in self.listeners]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self.tls.poll()
            except Exception:
                log.exception("checking the TLS certificate files failed")

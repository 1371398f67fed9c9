"""DNS over TLS (RFC 7858): the TCP stream loop inside TLS 1.2/1.3, queries pipelined and
answered out of order, the ClientID taken from the TLS server name
(`kid1.dns.example.org` under `[tls] server_name = "dns.example.org"`; a name we do not
serve is refused during the handshake with `unrecognized_name`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from dns_resolver.transports.certs import ServerTls
from dns_resolver.transports.stream import ListenerStats, StreamListener, serve_stream

if TYPE_CHECKING:
    from dns_resolver.transports.server import DnsServer

TRANSPORT = "tls"


def dot_listener(
    server: DnsServer,
    host: str,
    port: int,
    tls: ServerTls,
    stats: ListenerStats,
    *,
    reuse_port: bool = False,
) -> StreamListener:
    """A DoT listener on `host`:`port` (not started)."""

    async def handle(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[Any, ...],
        client_id: str | None,
    ) -> None:
        config = tls.config
        await serve_stream(
            server,
            reader,
            writer,
            peer,
            TRANSPORT,
            client_id=client_id,
            idle_timeout=config.idle_timeout,
            max_inflight=config.max_inflight,
            padding=config.padding,
            stats=stats,
        )

    return StreamListener(
        server, host, port, TRANSPORT, tls, handle, stats, reuse_port=reuse_port
    )

"""DNS over HTTPS upstreams (RFC 8484): POSTs multiplexed on one kept-open HTTP/2 connection.

httpx (with `h2`) keeps the connection and runs concurrent queries as streams on it; it
is closed after `idle_timeout` seconds without a query. A query that fails
because a kept-open connection broke is sent once more (httpx then opens a new one).

A DoH host that is a name is resolved through `[upstream] bootstrap` (plain DNS to those
servers only, never through filterdns itself), and the address kept for the answer's TTL
(at least a minute). The connection goes to that address with the name as TLS server name
and HTTP authority, so the certificate is checked for the name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import struct
import time

import httpx

from dns_resolver import wire
from dns_resolver.upstreams.upstream import EncryptedUpstream, Forwarder, UpstreamError, matches
from dns_resolver.upstreams.upstream_tls import client_context, handshake_error
from fdconfig.upstream import DohServer

MIN_ADDRESS_TTL = 60.0
_HEADERS = {"content-type": "application/dns-message", "accept": "application/dns-message"}


class HttpsUpstream(EncryptedUpstream):
    """A DoH server: `https://HOST[:PORT]/PATH`."""

    transport = "https"

    def __init__(
        self,
        server: DohServer,
        ca_file: str,
        idle_timeout: float,
        bootstrap: Forwarder | None,
    ) -> None:
        super().__init__(server.ip or server.host, server.port)
        self.url = server.url
        self.server = server
        self.bootstrap = bootstrap
        self._target: tuple[str, float] | None = None  # (URL to the address, valid until)
        if server.ip is not None:
            self._target = (server.url, float("inf"))
        self._extensions = {"sni_hostname": server.host, "trace": self._trace}
        self._headers = {**_HEADERS, "host": httpx.URL(server.url).netloc.decode()}
        self.idle_timeout = idle_timeout
        self._context = client_context(ca_file)
        self._client: httpx.AsyncClient | None = None
        self._asking = 0  # queries in flight
        self._idle: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _http(self) -> httpx.AsyncClient:
        """The client with the kept-open connection; a new one after an idle close."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                http2=True,
                verify=self._context,
                timeout=None,  # the caller's asyncio timeout bounds the whole attempt
                trust_env=False,  # no proxy from the environment between us and the server
            )
        return self._client

    def _idle_close(self) -> None:
        """No query for `idle_timeout` seconds: close the connection (httpx itself would
        only notice at the next query)."""
        self._idle = None
        client, self._client = self._client, None
        if client is not None:
            task = asyncio.ensure_future(client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @property
    def name(self) -> str:
        return self.url

    async def ask(self, message: bytes, qid: int, question: bytes, timeout: float) -> bytes:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._asking += 1
        try:
            return await self._ask(message, qid, question, timeout)
        finally:
            self._asking -= 1
            if not self._asking and self._client is not None:
                loop = asyncio.get_running_loop()
                self._idle = loop.call_later(self.idle_timeout, self._idle_close)

    async def _ask(self, message: bytes, qid: int, question: bytes, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                url = await self._url()
                try:
                    reply = await self._post(url, message)
                except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                    # A kept-open connection the server had closed: once more, on a new one.
                    reply = await self._post(url, message)
        except TimeoutError:
            raise UpstreamError("timeout", "timeout") from None
        except httpx.ConnectError as exc:
            cause = _ssl_cause(exc)
            if cause is not None:
                raise handshake_error(cause) from None
            raise UpstreamError("network", f"cannot connect: {exc}") from None
        except httpx.TransportError as exc:
            raise UpstreamError("network", f"{type(exc).__name__}: {exc}") from None
        if reply.status_code != 200:
            raise UpstreamError("http", f"HTTP status {reply.status_code}")
        if not matches(reply.content, qid, question):
            raise UpstreamError("garbage", "the HTTP answer is not the DNS answer asked for")
        return reply.content

    async def _post(self, url: str, message: bytes) -> httpx.Response:
        return await self._http().post(
            url, content=message, headers=self._headers, extensions=self._extensions
        )

    async def _trace(self, event: str, info: dict[str, object]) -> None:
        if event == "connection.start_tls.complete":
            self.connected()

    async def _url(self) -> str:
        """The URL with the host's address in it, resolved through the bootstrap servers
        when the cached one has expired."""
        target = self._target
        if target is not None and time.monotonic() < target[1]:
            return target[0]
        if self.bootstrap is None:  # the config requires bootstrap servers for a name
            raise UpstreamError("network", f"no bootstrap server to resolve {self.server.host}")
        address, ttl = await self._resolve(self.server.host)
        self.host = address
        url = str(httpx.URL(self.url).copy_with(host=address))
        self._target = (url, time.monotonic() + max(ttl, MIN_ADDRESS_TTL))
        return url

    async def _resolve(self, host: str) -> tuple[str, float]:
        assert self.bootstrap is not None
        for qtype in (wire.TYPE_A, wire.TYPE_AAAA):
            packet = (
                wire.header(0, wire.RD, 1, 0, 0, 0)
                + wire.encode_name(host)
                + struct.pack("!HH", qtype, wire.CLASS_IN)
            )
            answer = await self.bootstrap.resolve(wire.parse_query(packet))
            if answer is None:
                raise UpstreamError("network", f"the bootstrap servers did not resolve {host}")
            for rr in wire.walk_records(answer):
                if rr.section == 1 and rr.rtype == qtype:
                    rdata = answer[rr.rdata_offset : rr.rdata_offset + rr.rdlength]
                    family = 4 if qtype == wire.TYPE_A else 6
                    return _ip_text(rdata, family), float(rr.ttl)
        raise UpstreamError("network", f"{host} has no address (asked the bootstrap servers)")

    async def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _ip_text(rdata: bytes, family: int) -> str:
    return str(ipaddress.IPv4Address(rdata) if family == 4 else ipaddress.IPv6Address(rdata))


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx connection error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None

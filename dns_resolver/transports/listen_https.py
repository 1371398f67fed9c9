"""DNS over HTTPS (RFC 8484): HTTP/2 (the `h2` library) and HTTP/1.1 (`h11`), chosen by
ALPN, both sans-IO over the TLS stream `StreamListener` hands over.

- `GET /dns-query?dns=<base64url>` and `POST /dns-query` with `application/dns-message`;
  `/dns-query/ID` gives the ClientID `ID` (lower case).
- Answers: `200`, `application/dns-message`, `Cache-Control: max-age=<the smallest TTL
  of the answer's records>` (0 when it has none), padded as DoT pads them.
- Errors: `400` (no `dns` parameter, invalid base64url, not a DNS query), `404` (another
  path), `405` (another method), `413` (a body over 65,535 bytes), `415` (another
  Content-Type); broken HTTP (a bad HTTP/2 preface, a frame out of place) closes the
  connection (HTTP/2: with a GOAWAY).
- HTTP/2 advertises `tls.max_streams` as SETTINGS_MAX_CONCURRENT_STREAMS; a stream beyond
  it is reset with REFUSED_STREAM (a stream error, RFC 9113 5.1.2), and the connection's
  other streams go on.
- A connection is closed when no whole request arrived within `tls.idle_timeout` (a
  client trickling bytes counts as idle) and nothing of it is in flight.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h11

from dns_resolver import edns, wire
from dns_resolver.resolver import Pending
from dns_resolver.transports.certs import ServerTls
from dns_resolver.transports.stream import ListenerStats, StreamListener

if TYPE_CHECKING:
    from hyperframe.frame import Frame

    from dns_resolver.transports.server import DnsServer

log = logging.getLogger(__name__)

TRANSPORT = "https"
PATH = "/dns-query"
CONTENT_TYPE = "application/dns-message"
MAX_BODY = 65_535
MAX_HEADERS = 16_384  # bytes of request headers (h11's incomplete event, h2's header list)
READ_SIZE = 65_536


class Reply(NamedTuple):
    """An HTTP response to one DoH request."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, reason: str, *headers: tuple[str, str]) -> Reply:
    return Reply(status, reason.encode() + b"\n", (("content-type", "text/plain"), *headers))


def min_ttl(message: bytes) -> int:
    """The smallest TTL of a message's records, OPT aside; 0 without records."""
    try:
        ttls = [r.ttl for r in wire.walk_records(message) if r.rtype != wire.TYPE_OPT]
    except wire.WireError:
        return 0
    return min(ttls, default=0)


def decode_dns_parameter(value: str) -> bytes:
    """The bytes of a `dns=` parameter: base64url without padding (RFC 8484 4.1; padding
    is accepted too). Raises ValueError for anything else."""
    text = value.rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the dns parameter is not base64url") from None


class DohService:
    """Turns DoH requests into DNS answers through the server's core (one per listener)."""

    def __init__(self, server: DnsServer, tls: ServerTls, stats: ListenerStats) -> None:
        self.server = server
        self.tls = tls
        self.stats = stats

    def refuse(self, reply: Reply) -> Reply:
        self.stats.error(TRANSPORT, "http")
        return reply

    def check(self, method: str, target: str, content_type: str | None, size: int) -> Reply | None:
        """The error a request gets before its body is read (None: none)."""
        path = target.partition("?")[0]
        if path != PATH and not path.startswith(PATH + "/"):
            return self.refuse(_error(404, "not found: DNS queries go to /dns-query"))
        if method not in ("GET", "POST"):
            return self.refuse(_error(405, "use GET or POST", ("allow", "GET, POST")))
        if method == "POST":
            if (content_type or "").split(";")[0].strip().lower() != CONTENT_TYPE:
                return self.refuse(_error(415, f"the Content-Type must be {CONTENT_TYPE}"))
            if size > MAX_BODY:
                return self.refuse(_error(413, f"a DNS message is at most {MAX_BODY} bytes"))
        return None

    async def answer(
        self,
        peer: tuple[Any, ...],
        method: str,
        target: str,
        content_type: str | None,
        body: bytes,
    ) -> Reply:
        """The response to a whole request."""
        early = self.check(method, target, content_type, len(body))
        if early is not None:
            return early
        path, _, query = target.partition("?")
        client_id = unquote(path[len(PATH) + 1 :]).strip("/").lower() or None
        if client_id is not None and "/" in client_id:
            return self.refuse(_error(404, "not found: /dns-query/CLIENT-ID has one segment"))
        if method == "GET":
            values = parse_qs(query).get("dns")
            if not values:
                return self.refuse(_error(400, "no dns parameter"))
            try:
                data = decode_dns_parameter(values[0])
            except ValueError as exc:
                return self.refuse(_error(400, str(exc)))
        else:
            data = body
        server = self.server
        out = server.answer(data, peer, TRANSPORT, client_id) if len(data) >= 12 else None
        if isinstance(out, Pending):
            out = await server.answer_later(out, data, peer, TRANSPORT)
        return self.reply(out)

    def reply(self, out: bytes | None) -> Reply:
        """The response carrying the core's answer `out` (None: the query was not DNS)."""
        if out is None:
            return self.refuse(_error(400, "not a DNS query"))
        if self.tls.config.padding:
            out = edns.pad(out)
        headers = (("content-type", CONTENT_TYPE), ("cache-control", f"max-age={min_ttl(out)}"))
        return Reply(200, out, headers)


def https_listener(
    server: DnsServer,
    host: str,
    port: int,
    tls: ServerTls,
    stats: ListenerStats,
    *,
    reuse_port: bool = False,
) -> StreamListener:
    """A DoH listener on `host`:`port` (not started)."""
    service = DohService(server, tls, stats)

    async def handle(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[Any, ...],
        _client_id: str | None,
    ) -> None:
        # DoH's ClientID is the path's, not the server name's.
        obj = writer.get_extra_info("ssl_object")
        alpn = obj.selected_alpn_protocol() if obj is not None else None
        session = _H2Session if alpn == "h2" else _H1Session
        await session(service, reader, writer, peer).run()

    return StreamListener(server, host, port, TRANSPORT, tls, handle, stats, reuse_port=reuse_port)


class _Session:
    """One DoH connection: reads with a deadline that whole requests move on."""

    def __init__(
        self,
        service: DohService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[Any, ...],
    ) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.idle_timeout = service.tls.config.idle_timeout
        self.deadline = asyncio.get_running_loop().time() + self.idle_timeout

    def progress(self) -> None:
        """A whole request arrived or an answer went out: the idle clock restarts."""
        self.deadline = asyncio.get_running_loop().time() + self.idle_timeout

    async def read(self) -> bytes | None:
        """The next bytes (b"" at EOF), or None when the deadline passed."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            return None


class _FrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2 checks a frame's length against SETTINGS_MAX_FRAME_SIZE only once the whole
    frame is in: a 9-byte header claiming 16 MiB would have the connection wait for, and
    hold, that much before its FRAME_SIZE_ERROR. Here the header alone decides (RFC 9113
    4.2)."""

    def __next__(self) -> Frame:
        if len(self._data) >= 9:
            self._validate_frame_length(int.from_bytes(self._data[:3], "big"))
        return super().__next__()


class _H2Connection(h2.connection.H2Connection):
    """h2 treats a stream over SETTINGS_MAX_CONCURRENT_STREAMS as a connection error; the
    session resets such streams itself instead (REFUSED_STREAM), so here none is over."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.incoming_buffer = _FrameBuffer(server=True)

    @property
    def open_inbound_streams(self) -> int:
        # The property's side effect forgets closed streams (bounded memory in a flood).
        h2.connection.H2Connection.open_inbound_streams.fget(self)  # type: ignore[attr-defined]
        return 0


class _Request:
    __slots__ = ("headers", "body", "done")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.body = bytearray()
        self.done = False  # answered (or refused) already: further data is ignored


class _H2Session(_Session):
    async def run(self) -> None:
        config = self.service.tls.config
        conn = _H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADERS,
            },
        )
        conn.initiate_connection()
        self.conn = conn
        self.max_streams = config.max_streams
        self.requests: dict[int, _Request] = {}
        self.unsent: dict[int, bytes] = {}  # answers waiting for flow-control window
        self.tasks: set[asyncio.Task[None]] = set()
        stats = self.service.stats
        try:
            self.flush()
            while True:
                data = await self.read()
                if data is None:
                    if self.tasks:
                        self.progress()  # answers in flight: not idle
                        continue
                    stats.error(TRANSPORT, "idle")
                    conn.close_connection()
                    self.flush()
                    return
                if not data:
                    return
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.debug("DoH client %s: HTTP/2 error: %s", self.peer[:1], exc)
                    stats.error(TRANSPORT, "http_protocol")
                    if conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                        # A bad preface, for which h2 queues no GOAWAY (RFC 9113 3.4 lets
                        # it be left out); C's listener sends one, and so do we.
                        conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
                    self.flush()  # the GOAWAY
                    return
                for event in events:
                    self.on_event(event)
                self.flush()
                await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("DoH client %s: %s", self.peer[:1], exc)
        finally:
            for task in self.tasks:
                task.cancel()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out and not self.writer.is_closing():
            self.writer.write(out)

    def on_event(self, event: h2.events.Event) -> None:
        conn = self.conn
        if isinstance(event, h2.events.RequestReceived):
            stream_id = event.stream_id
            if len(self.requests) >= self.max_streams:
                self.service.stats.error(TRANSPORT, "refused_stream")
                conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            headers = {str(k): str(v) for k, v in event.headers or ()}
            request = _Request(headers)
            self.requests[stream_id] = request
            try:
                size = int(headers.get("content-length", "0"))
            except ValueError:
                size = 0
            early = self.service.check(
                headers.get(":method", ""), headers.get(":path", ""),
                headers.get("content-type"), size,
            )
            if early is not None:
                request.done = True
                self.respond(stream_id, early)
            elif event.stream_ended is not None:
                self.dispatch(stream_id, request)
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            receiving = self.requests.get(event.stream_id)
            if receiving is None or receiving.done:
                return
            receiving.body += event.data or b""
            if len(receiving.body) > MAX_BODY:
                receiving.done = True
                reply = self.service.refuse(
                    _error(413, f"a DNS message is at most {MAX_BODY} bytes")
                )
                self.respond(event.stream_id, reply)
            elif event.stream_ended is not None:
                self.dispatch(event.stream_id, receiving)
        elif isinstance(event, h2.events.StreamEnded):
            ended = self.requests.get(event.stream_id)
            if ended is not None and not ended.done:
                self.dispatch(event.stream_id, ended)
        elif isinstance(event, h2.events.StreamReset):
            self.requests.pop(event.stream_id, None)
            self.unsent.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id in list(self.unsent):
                self.send_body(stream_id, self.unsent.pop(stream_id))

    def dispatch(self, stream_id: int, request: _Request) -> None:
        request.done = True
        self.progress()
        headers = request.headers
        coro = self.service.answer(
            self.peer,
            headers.get(":method", ""),
            headers.get(":path", ""),
            headers.get("content-type"),
            bytes(request.body),
        )
        # Always from a task, even an answer ready at once: sent while the request's
        # frames were still being handled, dnsperf 2.10's DoH mode lost every answer after
        # the first of a connection (curl and kdig did not); from a task it loses none.
        task = asyncio.get_running_loop().create_task(self.answer(stream_id, coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, stream_id: int, coro: Any) -> None:
        reply = await coro
        if stream_id in self.requests:  # not reset meanwhile
            self.respond(stream_id, reply)
            self.flush()
        self.progress()

    def respond(self, stream_id: int, reply: Reply) -> None:
        headers = [(":status", str(reply.status)), *reply.headers]
        headers.append(("content-length", str(len(reply.body))))
        try:
            self.conn.send_headers(stream_id, headers, end_stream=not reply.body)
        except h2.exceptions.StreamClosedError:
            self.requests.pop(stream_id, None)
            return
        if reply.body:
            self.send_body(stream_id, reply.body)
        else:
            self.requests.pop(stream_id, None)

    def send_body(self, stream_id: int, body: bytes) -> None:
        """Send what the flow-control window allows; the rest waits for WINDOW_UPDATE."""
        conn = self.conn
        try:
            while body:
                size = min(
                    conn.local_flow_control_window(stream_id),
                    conn.max_outbound_frame_size,
                    len(body),
                )
                if size <= 0:
                    self.unsent[stream_id] = body
                    return
                conn.send_data(stream_id, body[:size])
                body = body[size:]
            conn.end_stream(stream_id)
        except h2.exceptions.StreamClosedError:
            pass
        self.requests.pop(stream_id, None)


class _H1Session(_Session):
    async def run(self) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        self.conn = conn
        stats = self.service.stats
        try:
            while True:
                event = await self.next_event()
                if event is None:
                    return
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed
                reply = await self.request(event)
                if reply is None:
                    return
                self.send(reply)
                await self.writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                self.progress()
        except h11.RemoteProtocolError as exc:
            log.debug("DoH client %s: HTTP/1.1 error: %s", self.peer[:1], exc)
            stats.error(TRANSPORT, "http_protocol")
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self.send(_error(exc.error_status_hint, "bad HTTP request"))
        except (ConnectionError, OSError) as exc:
            log.debug("DoH client %s: %s", self.peer[:1], exc)

    async def next_event(self) -> Any:
        """The next h11 event, reading as needed; None when the client went quiet."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.read()
            if data is None:
                self.service.stats.error(TRANSPORT, "idle")
                return None
            conn.receive_data(data)

    async def request(self, request: h11.Request) -> Reply | None:
        """The reply to `request` once its body is in (None: the client went away)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        content_type = headers.get("content-type")
        try:
            size = int(headers.get("content-length", "0"))
        except ValueError:
            size = 0
        early = self.service.check(method, target, content_type, size)
        if early is not None:
            return self._closing(early)
        body = bytearray()
        while True:
            event = await self.next_event()
            if event is None or isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.EndOfMessage):
                break
            body += event.data
            if len(body) > MAX_BODY:
                return self._closing(
                    self.service.refuse(_error(413, f"a DNS message is at most {MAX_BODY} bytes"))
                )
        self.progress()
        return await self.service.answer(self.peer, method, target, content_type, bytes(body))

    def _closing(self, reply: Reply) -> Reply:
        # The request's body is left unread: the connection cannot carry another one.
        return reply._replace(headers=(*reply.headers, ("connection", "close")))

    def send(self, reply: Reply) -> None:
        conn = self.conn
        headers = [*reply.headers, ("content-length", str(len(reply.body)))]
        out = conn.send(h11.Response(status_code=reply.status, headers=headers))
        out += conn.send(h11.Data(data=reply.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        if out and not self.writer.is_closing():
            self.writer.write(out)

"""Fuzz: DoH (HTTP/2 and HTTP/1.1) and DoQ against a real `filterdns serve`, as the TCP
fuzz (test_tcp_stream.py) does for plain DNS over TCP.

Each case gets its protocol's error (an HTTP 4xx, RST_STREAM, GOAWAY, DOQ_PROTOCOL_ERROR,
a QUIC close) or a clean close, never a hang, a traceback or a dead listener; after each
batch a fresh client's normal query is still answered. The checks are on the wire (status
codes, frames, close codes) and in /metrics, so they hold whichever HTTP/2 stack serves:
each DoH test runs against both listeners, the C stream loop's (`_doh.pyx`, nghttp2) and
the asyncio one (`listen_https.py`, h2 and h11, as with `fast_path = false`), which must
behave the same. Every test draws from a fixed seed: a failure replays the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import dns.message
import dns.rcode
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11
import hpack
import httpx
import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.packet import QuicErrorCode
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame

from dns_resolver.transports.listen_quic import DOQ_EXCESSIVE_LOAD, DOQ_PROTOCOL_ERROR
from tests.dns_resolver.encrypted import (
    RawDoq,
    doh_port,
    doq_configuration,
    doq_framed,
    encrypted_config,
    quic_port,
    tls_connect,
)
from tests.dns_resolver.harness import LOOPBACK, ServerProcess, TestZone, eventually, free_port
from tests.dns_resolver.transports.test_listen_https import b64, url, wire
from tests.dns_resolver.transports.test_listen_quic import doq

Z = TestZone
MAX_STREAMS = 8
IDLE = 5.0  # [tls] idle_timeout: longer than any case takes, shorter than a hang's bound
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, PING, CONTINUATION = 0x1, 0x6, 0x9  # RFC 9113 frame types; 0x0-0x9 are its own
UNKNOWN_TYPES = range(0x20, 0xF0)  # a band no HTTP/2 extension uses: a peer must ignore them
C_LOOP = "DNS over HTTPS is served from the C stream loop"


def _start(start: Callable[..., ServerProcess], tmp_path: Path, c_loop: bool) -> ServerProcess:
    config = encrypted_config(tmp_path, max_streams=MAX_STREAMS, idle_timeout=IDLE)
    config["server"]["listen_quic"] = [f"{LOOPBACK}:{free_port()}"]
    config["server"]["fast_path"] = c_loop
    # Some mutated queries get no answer from NSD: let them fail fast.
    config["upstream"] = {"timeout": 0.2}
    server = start(config)
    assert (C_LOOP in server.stderr_text()) == c_loop
    return server


@pytest.fixture(params=["c", "asyncio"])
def server(
    request: pytest.FixtureRequest, filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> ServerProcess:
    """A server whose DoH listener is C's or asyncio's."""
    return _start(filterdns_on_nsd, tmp_path, request.param == "c")


@pytest.fixture
def quic_server(filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    """A server for the DoQ tests (asyncio's whichever stream loop serves DoH)."""
    return _start(filterdns_on_nsd, tmp_path, True)


def _errors(server: ServerProcess, transport: str, kind: str) -> float:
    return server.metric("filterdns_listener_errors_total", transport=transport, kind=kind)


def _doh_answers(server: ServerProcess, http2: bool = True) -> None:
    """The process lives and a fresh DoH client's normal query is answered."""
    assert server.running()
    with httpx.Client(http2=http2, verify=False, timeout=5) as client:
        ok = client.get(url(server), params={"dns": b64(wire(Z.WWW))})
    assert ok.status_code == 200
    assert dns.message.from_wire(ok.content).answer[0][0].to_text() == Z.WWW_A


def _no_tracebacks(server: ServerProcess) -> None:
    log = server.stderr_text()
    assert "Traceback" not in log and "exception was never retrieved" not in log, log[-3000:]


# -- HTTP/2 on the wire ---------------------------------------------------------------------


def _frame(
    kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None
) -> bytes:
    """One HTTP/2 frame as given (RFC 9113 4.1), `length` in its header when it must lie."""
    size = len(payload) if length is None else length
    return struct.pack("!I", size)[1:] + struct.pack("!BBI", kind, flags, stream_id) + payload


def _h2_connect(port: int) -> ssl.SSLSocket:
    sock = tls_connect(port, alpn=("h2",))
    assert sock.selected_alpn_protocol() == "h2"
    return sock


def _h2_client() -> h2.connection.H2Connection:
    # Our own requests may be malformed on purpose: h2 must not check what we send.
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                  normalize_outbound_headers=False)
    )
    conn.initiate_connection()
    return conn


def _send_cut(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    """`data` in writes of random sizes (each its own TLS record)."""
    at = 0
    while at < len(data):
        step = rng.randrange(1, 48)
        sock.sendall(data[at : at + step])
        at += step


def _server_frames(sock: ssl.SSLSocket, stop: Callable[[Frame], bool]) -> tuple[list[Frame], bool]:
    """The server's frames until `stop` holds for one (False: the connection is open) or
    it closes the connection (True). A read that waits past the socket's timeout fails."""
    frames: list[Frame] = []
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no close and no answer; frames so far: {frames}") from None
        except OSError:  # a reset: the server closed with our bytes unread
            return frames, True
        if not chunk:
            return frames, True
        buf += chunk
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            frames.append(frame)
            if stop(frame):
                return frames, False


def _after_junk(sock: ssl.SSLSocket, token: bytes) -> tuple[list[Frame], bool]:
    """Ping the server after a case: its frames up to our PING's ACK (the connection goes
    on: False) or up to its close (True)."""
    with contextlib.suppress(OSError):  # closed already: the read below sees it
        sock.sendall(_frame(PING, 0, 0, token))

    def acked(frame: Frame) -> bool:
        return isinstance(frame, PingFrame) and "ACK" in frame.flags and frame.opaque_data == token

    return _server_frames(sock, acked)


def _random_frame(rng: random.Random) -> tuple[bool, bytes]:
    """A frame of a random type (a known one or one to ignore) with random flags, stream
    and payload; its header's length is the payload's, or now and then over the limit.
    With it, whether the server must ignore it (an unknown type of a lawful size)."""
    kind = rng.choice(UNKNOWN_TYPES) if rng.random() < 0.3 else rng.randrange(CONTINUATION + 1)
    stream_id = rng.choice([0, 1, 3, rng.randrange(2, 100), rng.randrange(1 << 31)])
    payload = rng.randbytes(rng.choice([0, 1, 4, 5, 6, 8, 12, rng.randrange(64)]))
    # A length over SETTINGS_MAX_FRAME_SIZE is refused from the header alone: never a
    # lie the server would wait on (a short one would make the next frame a new case).
    length = rng.choice([16_385, (1 << 24) - 1]) if rng.random() < 0.1 else None
    ignored = kind in UNKNOWN_TYPES and length is None
    return ignored, _frame(kind, rng.randrange(256), stream_id, payload, length)


def test_h2_random_bytes_and_broken_prefaces_close_cleanly(server: ServerProcess) -> None:
    """Random bytes where the preface goes, the preface with a byte changed, or cut short
    (then our side ends): each connection ends, the listener goes on."""
    port = doh_port(server)
    rng = random.Random(1401)
    for case in range(90):
        kind = case % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(24, 300))
        elif kind == 1:
            mutated = bytearray(PREFACE)
            at = rng.randrange(len(PREFACE))
            mutated[at] = (mutated[at] + rng.randrange(1, 256)) % 256
            data = bytes(mutated) + _h2_client().data_to_send()[len(PREFACE) :]
        else:
            data = PREFACE[: rng.randrange(1, len(PREFACE))]
        with _h2_connect(port) as sock:
            sock.settimeout(IDLE + 5)
            _send_cut(sock, data, rng)
            if kind == 2:
                # Cut short, then our TLS close_notify: the server closes, sooner than its
                # idle timeout (its SETTINGS may come first, which unwrap() takes amiss).
                with contextlib.suppress(ssl.SSLError):
                    sock.unwrap()
                with socket.socket(fileno=sock.detach()) as raw:
                    raw.settimeout(IDLE - 1)
                    with contextlib.suppress(ConnectionResetError):
                        while raw.recv(4096):
                            pass
                continue
            frames, closed = _server_frames(sock, lambda _: False)
        assert closed, case
        assert not any(isinstance(f, PingFrame) for f in frames)
        if case % 30 == 29:
            _doh_answers(server)
    _doh_answers(server)
    assert _errors(server, "https", "http_protocol") == 60  # the broken ones, not the cut
    _no_tracebacks(server)


def test_h2_random_frames_get_goaway_or_are_ignored(server: ServerProcess) -> None:
    """After a valid preface, 1 to 3 random frames (types, flags, streams, lengths): the
    server either goes on (answers our PING) or ends the connection with a GOAWAY that
    names an error; frames of unknown types alone are ignored (RFC 9113 5.5)."""
    port = doh_port(server)
    rng = random.Random(1402)
    outcomes = {"alive": 0, "goaway": 0}
    malformed = 0  # streams reset with PROTOCOL_ERROR on connections that went on
    for case in range(150):
        frames = [_random_frame(rng) for _ in range(rng.randrange(1, 4))]
        token = struct.pack("!Q", case)
        with _h2_connect(port) as sock:
            sock.settimeout(IDLE + 5)
            sock.sendall(_h2_client().data_to_send() + b"".join(f for _, f in frames))
            got, closed = _after_junk(sock, token)
        if closed:
            goaways = [f for f in got if isinstance(f, GoAwayFrame)]
            assert goaways and goaways[-1].error_code != 0, (case, frames, got)
            outcomes["goaway"] += 1
        else:
            outcomes["alive"] += 1
            protocol = h2.errors.ErrorCodes.PROTOCOL_ERROR
            malformed += sum(
                isinstance(f, RstStreamFrame) and f.error_code == protocol for f in got
            )
        if all(ignored for ignored, _ in frames):
            assert not closed, (case, frames, got)
        if case % 50 == 49:
            _doh_answers(server)
    assert outcomes["alive"] >= 10 and outcomes["goaway"] >= 10, outcomes
    # A header claiming more than SETTINGS_MAX_FRAME_SIZE is refused from the header alone,
    # not after the server waited for (and held) 16 MiB.
    with _h2_connect(port) as sock:
        sock.settimeout(IDLE - 1)  # before the idle timeout's close
        sock.sendall(_h2_client().data_to_send() + _frame(0xF0, 0, 0, b"", (1 << 24) - 1))
        got, closed = _after_junk(sock, b"too long")
    assert closed and [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [
        h2.errors.ErrorCodes.FRAME_SIZE_ERROR
    ]
    # Each protocol error counted once (with the last case's), a connection's or a stream's.
    assert _errors(server, "https", "http_protocol") == outcomes["goaway"] + malformed + 1
    _doh_answers(server)
    _no_tracebacks(server)


# -- HTTP/2 requests --------------------------------------------------------------------------


class _Exchange:
    """An h2 client's requests on one connection and what the server made of them."""

    def __init__(self, port: int) -> None:
        self.sock = _h2_connect(port)
        self.sock.settimeout(IDLE + 5)
        self.conn = _h2_client()
        # The server's SETTINGS_MAX_CONCURRENT_STREAMS binds the server, not this client.
        self.conn.remote_settings.max_concurrent_streams = 1000
        self.status: dict[int, int] = {}
        self.body: dict[int, bytes] = {}
        self.ended: set[int] = set()  # streams whose response came whole
        self.reset: dict[int, int] = {}
        self.goaway: int | None = None
        self.closed = False

    def request(self, method: str, path: str, headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"") -> int:  # fmt: skip
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [(":method", method), (":scheme", "https"), (":authority", "x"), (":path", path),
             *headers],
            end_stream=not body,
        )  # fmt: skip
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        return stream_id

    def flush(self, rng: random.Random | None = None) -> None:
        """Send what h2 queued, cut at random points with `rng`."""
        out = self.conn.data_to_send()
        try:
            if rng is None:
                self.sock.sendall(out)
            else:
                _send_cut(self.sock, out, rng)
        except OSError:
            self.closed = True

    def read(self) -> None:
        """Take in what the server sends next (a read past the timeout fails)."""
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError("the server neither answers nor closes") from None
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.status[event.stream_id] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.body[event.stream_id] = self.body.get(event.stream_id, b"") + event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.body.setdefault(event.stream_id, b"")
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset[event.stream_id] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event.error_code
        self.flush()

    def run(self, streams: list[int], rng: random.Random | None = None) -> None:
        """Send what is queued and read until each of `streams` is answered or reset, or
        the connection ends."""
        self.flush(rng)
        while not self.closed and not set(streams) <= self.ended | set(self.reset):
            self.read()

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def _exchange(port: int) -> Iterator[_Exchange]:
    ex = _Exchange(port)
    try:
        yield ex
    finally:
        ex.close()


def test_h2_valid_requests_cut_into_random_writes_are_answered(server: ServerProcess) -> None:
    """1 to `MAX_STREAMS` GETs and POSTs on a connection, its preface and frames cut into
    writes of 1 to 47 bytes: every one answered."""
    port = doh_port(server)
    rng = random.Random(1403)
    query = wire(Z.WWW)
    for case in range(40):
        with _exchange(port) as ex:
            streams = []
            for _ in range(rng.randrange(1, MAX_STREAMS + 1)):
                if rng.random() < 0.5:
                    streams.append(ex.request("GET", f"/dns-query?dns={b64(query)}"))
                else:
                    streams.append(ex.request(
                        "POST", "/dns-query", [("content-type", "application/dns-message"),
                                               ("content-length", str(len(query)))], query,
                    ))  # fmt: skip
            ex.run(streams, rng)
        assert set(streams) <= ex.ended, case
        for stream_id in streams:
            assert ex.status[stream_id] == 200, (case, stream_id)
            answer = dns.message.from_wire(ex.body[stream_id])
            assert answer.answer[0][0].to_text() == Z.WWW_A
    _doh_answers(server)
    _no_tracebacks(server)


def test_h2_a_flood_of_streams_is_refused_beyond_max_streams(server: ServerProcess) -> None:
    """Streams over SETTINGS_MAX_CONCURRENT_STREAMS in one write: each is answered or
    reset with REFUSED_STREAM, and the connection serves on."""
    port = doh_port(server)
    rng = random.Random(1404)
    path = f"/dns-query?dns={b64(wire(Z.WWW))}"
    refused = 0
    for case in range(10):
        with _exchange(port) as ex:
            streams = [ex.request("GET", path)
                       for _ in range(rng.randrange(MAX_STREAMS + 1, 5 * MAX_STREAMS))]
            ex.run(streams)
            assert not ex.closed, case
            assert set(ex.status) | set(ex.reset) == set(streams)
            assert set(ex.status.values()) <= {200}
            assert set(ex.reset.values()) <= {h2.errors.ErrorCodes.REFUSED_STREAM}
            refused += len(ex.reset)
            again = ex.request("GET", path)
            ex.run([again])
            assert ex.status[again] == 200
    assert refused >= 1
    assert _errors(server, "https", "refused_stream") == refused
    _doh_answers(server)
    _no_tracebacks(server)


def test_h2_tiny_windows_with_random_window_updates_resets_and_settings(
    server: ServerProcess,
) -> None:
    """Answers larger than the client's flow-control window, while the client sends
    WINDOW_UPDATEs of random sizes, resets random streams and changes its
    SETTINGS_INITIAL_WINDOW_SIZE: once the window opens, every stream not reset has its
    whole answer, and the connection never ends."""
    port = doh_port(server)
    rng = random.Random(1412)
    paths = [f"/dns-query?dns={b64(wire(Z.BIGTXT, 'TXT'))}", f"/dns-query?dns={b64(wire(Z.WWW))}"]
    initial = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
    for case in range(60):
        with _exchange(port) as ex:
            ex.conn.update_settings({initial: rng.choice([0, 1, 7, 100, 1000])})
            streams = [ex.request("GET", rng.choice(paths))
                       for _ in range(rng.randrange(1, MAX_STREAMS))]
            ex.flush()
            reset = set()
            for _ in range(30):
                roll = rng.random()
                stream_id = rng.choice(streams)
                # The client's own bookkeeping may refuse a step (a stream it closed):
                # that step is skipped, the server sees nothing of it.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    if roll < 0.3:
                        ex.conn.increment_flow_control_window(rng.randrange(1, 3000), stream_id)
                        ex.conn.increment_flow_control_window(rng.randrange(1, 3000))
                    elif roll < 0.4:
                        ex.conn.reset_stream(stream_id)
                        reset.add(stream_id)
                    elif roll < 0.5:
                        ex.conn.update_settings({initial: rng.randrange(0, 5000)})
                ex.flush()
            ex.conn.update_settings({initial: 65_535})
            ex.conn.increment_flow_control_window(1 << 20)
            kept = [s for s in streams if s not in reset]
            for stream_id in kept:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    ex.conn.increment_flow_control_window(65_535, stream_id)
            ex.run(kept)
            assert not ex.closed, case
            for stream_id in kept:
                assert ex.status[stream_id] == 200 and stream_id in ex.ended, (case, stream_id)
                assert dns.message.from_wire(ex.body[stream_id]).answer, (case, stream_id)
    _doh_answers(server)
    _no_tracebacks(server)


def _statuses(frames: list[Frame]) -> dict[int, int]:
    """The :status of each response among the server's frames (all its header blocks, in
    order, so that one HPACK decoder follows its dynamic table)."""
    decoder = hpack.Decoder()
    out = {}
    for frame in frames:
        if isinstance(frame, HeadersFrame):
            out[frame.stream_id] = int(dict(decoder.decode(frame.data))[":status"])
    return out


HPACK_CASES = [
    b"\x80",  # indexed field 0
    b"\xbf",  # an index past the static table, with an empty dynamic table
    b"\xff\xff\xff\xff\xff\x0f",  # an index beyond anything
    b"\x7f" + b"\xff" * 12,  # an integer that never ends
    b"\x3f\xe1\xff\xff\x0f",  # a table size over SETTINGS_HEADER_TABLE_SIZE
    b"\x82\x20",  # a table size update after a field
    b"\x40\x0aabc",  # a literal longer than the block
    b"\x40\x81\xff\x01a",  # a Huffman string that is all padding
    b"\x00\x03ABC\x01x",  # an upper-case field name: a malformed request
    b"\x82\x84\x86",  # GET / over http, lawful HPACK: a path not ours (404)
]


def test_h2_invalid_hpack_is_a_connection_or_stream_error(server: ServerProcess) -> None:
    """Header blocks that are not HPACK, or decode to a malformed request or one not ours,
    in one HEADERS frame or split over CONTINUATION: a GOAWAY with an error, a RST_STREAM
    or a 4xx."""
    port = doh_port(server)
    rng = random.Random(1405)
    blocks = [*HPACK_CASES, *(rng.randbytes(rng.randrange(1, 80)) for _ in range(70))]
    closes = malformed = 0
    for case, block in enumerate(blocks):
        if case % 4 == 3 and len(block) > 1:  # split: HEADERS, then CONTINUATION (END_HEADERS)
            cut = rng.randrange(1, len(block))
            frames = _frame(HEADERS, 0x1, 1, block[:cut]) + _frame(CONTINUATION, 0x4, 1,
                                                                   block[cut:])
        else:
            frames = _frame(HEADERS, 0x5, 1, block)  # END_STREAM | END_HEADERS
        with _h2_connect(port) as sock:
            sock.settimeout(IDLE + 5)
            sock.sendall(_h2_client().data_to_send() + frames)
            got, closed = _after_junk(sock, struct.pack("!Q", case))
        goaways = [f for f in got if isinstance(f, GoAwayFrame)]
        resets = [f for f in got if isinstance(f, RstStreamFrame) and f.stream_id == 1]
        statuses = _statuses(got)
        if closed:
            closes += 1
            assert goaways and goaways[-1].error_code != 0, (case, block, got)
        else:
            assert resets or 400 <= statuses.get(1, 0) < 500, (case, block, got)
            protocol = h2.errors.ErrorCodes.PROTOCOL_ERROR
            malformed += sum(f.error_code == protocol for f in resets)
    assert closes >= len(HPACK_CASES) // 2
    # Each protocol error counted once, a connection's or a stream's (a malformed request).
    assert _errors(server, "https", "http_protocol") == closes + malformed
    _doh_answers(server)
    _no_tracebacks(server)


def test_h2_huge_negative_and_false_content_lengths(server: ServerProcess) -> None:
    """A POST whose content-length is huge, negative, not a number or not its body's
    length gets a 4xx, a RST_STREAM or a GOAWAY with an error, never an answer; a body
    over 65,535 bytes gets 413 with or without a content-length."""
    port = doh_port(server)
    query = wire(Z.WWW)
    lengths = ["-1", "-65536", "99999999999999999999", "65536", "1e3", "", "0x21", "+33 ",
               str(len(query) - 1), str(len(query) + 1), "0", f"{len(query)}, {len(query) + 1}"]
    for length in lengths:
        with _exchange(port) as ex:
            stream = ex.request("POST", "/dns-query", [
                ("content-type", "application/dns-message"), ("content-length", length),
            ], query)  # fmt: skip
            ex.run([stream])
            if ex.closed:
                assert ex.goaway, length
            else:
                assert stream in ex.reset or 400 <= ex.status[stream] < 500, (length, ex.status)
    for length in (str(65_536), None):
        with _exchange(port) as ex:
            headers = [("content-type", "application/dns-message")]
            if length is not None:
                headers.append(("content-length", length))
            stream = ex.conn.get_next_available_stream_id()
            ex.conn.send_headers(stream, [(":method", "POST"), (":scheme", "https"),
                                          (":authority", "x"), (":path", "/dns-query"),
                                          *headers])  # fmt: skip
            sent = 0
            while sent < 70_000 and stream not in ex.status and not ex.closed:
                size = min(ex.conn.local_flow_control_window(stream), 16_000, 70_000 - sent)
                if size == 0:
                    ex.read()  # a WINDOW_UPDATE, or the answer
                    continue
                ex.conn.send_data(stream, bytes(size))
                ex.flush()
                sent += size
            ex.run([stream])
            assert ex.status.get(stream) == 413, (length, ex.status, ex.reset)
    _doh_answers(server)
    _no_tracebacks(server)


def test_h2_random_dns_parameters_and_bodies(server: ServerProcess) -> None:
    """GETs with random `dns=` values and POSTs of random bodies: a 400 (not base64url,
    not a DNS query) or a 200 whose body is a DNS response to those bytes (a FORMERR for
    most), as listen_https.py's contract says; every 400 is counted."""
    port = doh_port(server)
    rng = random.Random(1406)
    good = wire(Z.WWW)
    alphabet = "ABCxyz019-_=+/%*!~. "

    def mutated() -> bytes:
        data = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    cases: list[tuple[str, str, bytes]] = []  # method, dns= value or "", the bytes asked
    for i in range(300):
        kind = i % 6
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 100))
            cases.append(("GET", b64(data), data))
        elif kind == 1:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
            cases.append(("GET", text.replace(" ", "%20"), b""))
        elif kind == 2:
            data = mutated()
            cases.append(("GET", b64(data), data))
        elif kind == 3:
            data = rng.randbytes(rng.randrange(0, 600))
            cases.append(("POST", "", data))
        else:
            data = mutated()
            cases.append(("POST", "", data))
    before = _errors(server, "https", "http")
    bad_requests = 0
    for at in range(0, len(cases), MAX_STREAMS):
        batch = cases[at : at + MAX_STREAMS]
        with _exchange(port) as ex:
            streams = []
            for method, value, data in batch:
                if method == "GET":
                    streams.append(ex.request("GET", f"/dns-query?dns={value}"))
                else:
                    streams.append(ex.request("POST", "/dns-query", [
                        ("content-type", "application/dns-message"),
                        ("content-length", str(len(data))),
                    ], data))  # fmt: skip
            ex.run(streams)
            assert not ex.closed and not ex.reset
        for stream_id, (method, value, data) in zip(streams, batch, strict=True):
            status = ex.status[stream_id]
            assert status in (200, 400), (method, value, data, status)
            if status == 400:
                bad_requests += 1
                continue
            body = ex.body[stream_id]
            assert body[:2] == data[:2] and body[2] & 0x80, (method, value, data, body)
    assert bad_requests >= len(cases) // 3
    assert _errors(server, "https", "http") - before == bad_requests
    _doh_answers(server)
    _no_tracebacks(server)


# -- HTTP/1.1 ---------------------------------------------------------------------------------


def _h1_connect(port: int) -> ssl.SSLSocket:
    sock = tls_connect(port, alpn=("http/1.1",))
    assert sock.selected_alpn_protocol() == "http/1.1"
    sock.settimeout(IDLE + 5)
    return sock


def _h1_responses(sock: ssl.SSLSocket, count: int) -> tuple[list[tuple[int, bytes]], bool]:
    """Up to `count` responses, read one after another, and whether the server closed
    the connection before `count` came (each parsed by an h11 client of its own)."""
    out: list[tuple[int, bytes]] = []
    pending = b""
    while len(out) < count:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        if pending:  # (b"" would tell h11 the connection ended)
            client.receive_data(pending)
        status, body = 0, b""
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:
                # The server closed with no response begun (one cut short fails below).
                assert status == 0, (status, body)
                return out, True
            if event is h11.NEED_DATA:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    raise AssertionError("the server neither answers nor closes") from None
                except OSError:
                    data = b""
                client.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                pending = client.trailing_data[0]
                out.append((status, body))
                break
            else:  # ConnectionClosed
                return out, True
    return out, False


def _h1_request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    head = [f"{method} {target} HTTP/1.1", "host: x", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def test_h1_malformed_requests_get_a_4xx_or_a_clean_close(server: ServerProcess) -> None:
    """Broken request lines, headers and chunked bodies, and requests with a byte changed:
    each gets a 4xx (then the close), a clean close, or, where the change left it a valid
    request, its answer; the listener goes on."""
    port = doh_port(server)
    rng = random.Random(1407)
    query = wire(Z.WWW)
    post = ("content-type: application/dns-message",)
    broken = [
        b"GET\r\n\r\n",
        b"GET /dns-query HTTP/9.9\r\nhost: x\r\n\r\n",
        b"\x16\x03\x01\x00\x05junk\r\n\r\n",
        b"GET /dns-query HTTP/1.1\r\n\r\n",  # no Host
        _h1_request("GET", "/dns-query", "host x"),
        _h1_request("GET", "/dns-query", "host : x"),
        _h1_request("GET", "/dns-query", "\x00bad: y"),
        _h1_request("GET", "/dns-query", "x-long: " + "a" * 20_000),
        _h1_request("GET", "/dns-query?" + "dns=" * 5_000),
        _h1_request("POST", "/dns-query", *post, "content-length: 1", "content-length: 2",
                    body=b"ab"),
        _h1_request("POST", "/dns-query", *post, "content-length: -1", body=query),
        _h1_request("POST", "/dns-query", *post, "transfer-encoding: chunked", body=b"zz\r\n"),
        _h1_request("POST", "/dns-query", *post, "transfer-encoding: chunked",
                    body=b"ffffffffffffffffffff\r\n" + bytes(70_000)),
        _h1_request("POST", "/dns-query", *post, "transfer-encoding: chunked",
                    body=b"3\r\nabcdef\r\n0\r\n\r\n"),
        _h1_request("POST", "/dns-query", *post, "transfer-encoding: gzip, chunked",
                    body=_chunked(query)),
        _h1_request("POST", "/dns-query", *post, "transfer-encoding: chunked",
                    body=b"".join(_chunked(b"x" * 30_000)[:-5] for _ in range(3)) + b"0\r\n\r\n"),
    ]
    # Lawful, if odd (RFC 9112 6.3: the Transfer-Encoding wins): answered or refused.
    odd = [_h1_request("POST", "/dns-query", *post, "content-length: 5",
                       "transfer-encoding: chunked", body=_chunked(query))]
    # A GET with one byte changed, never into a CR or LF, nor in the blank line that ends
    # it: the server always has a whole head to judge.
    good = _h1_request("GET", f"/dns-query?dns={b64(query)}", "connection: close")
    mutated = []
    for _ in range(60):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data) - 4)] = rng.choice(
                [b for b in range(256) if b not in b"\r\n"]
            )
        mutated.append(bytes(data))
    for case, data in enumerate([*broken, *odd, *mutated]):
        with _h1_connect(port) as sock:
            _send_cut(sock, data, rng)
            responses, closed = _h1_responses(sock, 1)
        if case < len(broken):
            # 501: a transfer coding we do not know (RFC 9112 6.1).
            assert closed or 400 <= responses[0][0] < 500 or responses[0][0] == 501, (
                case, data[:200], responses)
        else:
            assert closed or responses[0][0] in (200, 400, 404, 405), (case, data, responses)
        if case % 20 == 19:
            _doh_answers(server, http2=False)
    assert _errors(server, "https", "http_protocol") >= len(broken) // 2
    # A chunked POST of a real query is one: answered.
    with _h1_connect(port) as sock:
        sock.sendall(_h1_request("POST", "/dns-query", *post, "transfer-encoding: chunked",
                                 body=_chunked(query)))
        [(status, body)], _ = _h1_responses(sock, 1)
    assert status == 200 and dns.message.from_wire(body).answer[0][0].to_text() == Z.WWW_A
    _doh_answers(server, http2=False)
    _no_tracebacks(server)


def test_h1_pipelined_requests_cut_at_random_points(server: ServerProcess) -> None:
    """2 to 6 requests in one stream, cut into random writes: each answered in order; cut
    short at a random point, the requests before the cut are answered."""
    port = doh_port(server)
    rng = random.Random(1408)
    names = [Z.WWW, Z.BLOCKED, Z.MX, Z.TXT]  # all NOERROR: the default policy blocks nothing
    for case in range(40):
        asked = [rng.choice(names) for _ in range(rng.randrange(2, 7))]
        requests = []
        for i, name in enumerate(asked):
            last = ("connection: close",) if i == len(asked) - 1 else ()
            if rng.random() < 0.5:
                requests.append(_h1_request("GET", f"/dns-query?dns={b64(wire(name))}", *last))
            else:
                requests.append(_h1_request(
                    "POST", "/dns-query", "content-type: application/dns-message",
                    f"content-length: {len(wire(name))}", *last, body=wire(name),
                ))  # fmt: skip
        stream = b"".join(requests)
        whole = case % 2 == 0
        if not whole:
            cut = rng.randrange(1, len(stream))
            complete = sum(1 for n in range(len(requests))
                           if len(b"".join(requests[: n + 1])) <= cut)
            stream = stream[:cut]
        with _h1_connect(port) as sock:
            _send_cut(sock, stream, rng)
            count = len(asked) if whole else complete
            responses, _ = _h1_responses(sock, count)
            if whole:
                assert _h1_responses(sock, 1) == ([], True)  # connection: close honoured
        assert len(responses) == count, (case, responses)
        for name, (status, body) in zip(asked[:count], responses, strict=True):
            assert status == 200
            answer = dns.message.from_wire(body)
            assert answer.question[0].name.to_text() == name
            assert answer.rcode() == dns.rcode.NOERROR
    _doh_answers(server, http2=False)
    _no_tracebacks(server)


# -- DoQ --------------------------------------------------------------------------------------


def _doq_answers(server: ServerProcess) -> None:
    """The process lives and a fresh DoQ client's (dnspython's) normal query is answered."""
    assert server.running()
    assert doq(server, Z.WWW).answer[0][0].to_text() == Z.WWW_A


async def _doq_stream(port: int, payload: bytes, unidirectional: bool = False) -> int | bytes:
    """`payload` on a new stream of a new connection, FIN after it: the code the server
    closed the connection with, or the bytes it answered on the stream."""
    async with connect(LOOPBACK, port, configuration=doq_configuration(),
                       create_protocol=RawDoq) as client:  # fmt: skip
        assert isinstance(client, RawDoq)
        answer = client.answer(client.send(payload, unidirectional=unidirectional))
        await asyncio.wait([answer, client.closed], timeout=5,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if client.closed.done():
            return client.closed.result().error_code
        assert answer.done(), "neither an answer nor a close"
        return answer.result()


async def _doq_final_size_lie(port: int) -> int:
    """Part of a query, then a FIN at an offset below the bytes already sent (stream data
    past its final size, RFC 9000 4.5): the code the server closes the connection with."""
    async with connect(LOOPBACK, port, configuration=doq_configuration(),
                       create_protocol=RawDoq) as client:  # fmt: skip
        assert isinstance(client, RawDoq)
        stream_id = client.send(doq_framed(Z.WWW)[:20], end=False)
        # Fault injection: aioquic's sender never sends a FIN below what it sent, so
        # its state is set to do so.
        sender = client._quic._streams[stream_id].sender
        sender._buffer_fin = 2
        sender._pending_eof = True
        sender.buffer_is_empty = False
        client.transmit()
        closed = await asyncio.wait_for(client.closed, 5)
        return closed.error_code


def test_doq_bad_streams_get_doq_protocol_error_or_a_clean_close(
    quic_server: ServerProcess,
) -> None:
    """Wrong length prefixes, random stream bytes, queries with bytes changed, data on a
    unidirectional stream, a FIN below the data sent: each closes its connection with
    DOQ_PROTOCOL_ERROR (QUIC's FINAL_SIZE_ERROR for the FIN) or is answered, and the
    listener goes on."""
    port = quic_port(quic_server)
    rng = random.Random(1409)
    query = doq_framed(Z.WWW)[2:]
    protocol_errors = 0

    async def batch(cases: list[tuple[str, bytes]]) -> list[tuple[str, bytes, int | bytes]]:
        out = []
        for kind, payload in cases:
            if kind == "final-size":
                out.append((kind, payload, await _doq_final_size_lie(port)))
            else:
                result = await _doq_stream(port, payload, unidirectional=kind == "uni")
                out.append((kind, payload, result))
        return out

    def case(i: int) -> tuple[str, bytes]:
        kind = i % 6
        if kind == 0:
            length = rng.choice([n for n in range(0, 80) if n != len(query)] + [65535])
            return "prefix", struct.pack("!H", length) + query
        if kind == 1:
            return "random", rng.randbytes(rng.randrange(0, 80))
        if kind in (2, 3):
            data = bytearray(query)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(2, len(data))] = rng.randrange(256)  # the ID stays 0
            return "mutated", struct.pack("!H", len(data)) + bytes(data)
        if kind == 4:
            return "uni", doq_framed(Z.WWW)
        return "final-size", b""

    cases = [case(i) for i in range(48)]
    for at in range(0, len(cases), 16):
        for kind, payload, result in asyncio.run(batch(cases[at : at + 16])):
            framing = len(payload) >= 2 and struct.unpack_from("!H", payload)[0] == len(payload) - 2
            if kind == "final-size":
                assert result == QuicErrorCode.FINAL_SIZE_ERROR
            elif kind == "mutated":
                # Still a DNS message (answered, ID 0) or not one (a protocol error).
                if result != DOQ_PROTOCOL_ERROR:
                    assert isinstance(result, bytes) and result[2:4] == b"\0\0", (payload, result)
            elif kind == "random" and framing:
                assert result == DOQ_PROTOCOL_ERROR or isinstance(result, bytes)
            else:
                assert result == DOQ_PROTOCOL_ERROR, (kind, payload, result)
            protocol_errors += result == DOQ_PROTOCOL_ERROR
        _doq_answers(quic_server)
    assert protocol_errors >= 24
    assert _errors(quic_server, "quic", "framing") == protocol_errors
    _no_tracebacks(quic_server)


def test_doq_many_streams_on_one_connection_with_resets(quic_server: ServerProcess) -> None:
    """300 streams on one connection (beyond QUIC's initial stream limit), some reset by
    the client at once: every other stream is answered (or refused with
    DOQ_EXCESSIVE_LOAD) and the connection stays up."""
    port = quic_port(quic_server)
    rng = random.Random(1410)
    names = [Z.WWW, Z.BLOCKED, Z.MX, Z.NXDOMAIN]

    async def run() -> tuple[list[tuple[str, object]], bool]:
        async with connect(LOOPBACK, port, configuration=doq_configuration(),
                           create_protocol=RawDoq) as client:  # fmt: skip
            assert isinstance(client, RawDoq)
            kept = []
            for i in range(300):
                name = rng.choice(names)
                stream_id = client.send(doq_framed(name))
                # Only streams the server allowed already: aioquic's client would send a
                # RESET_STREAM for one it holds back too (a STREAM_LIMIT_ERROR, rightly).
                if i < 100 and rng.random() < 0.15:
                    client._quic.reset_stream(stream_id, DOQ_PROTOCOL_ERROR)
                    client.transmit()
                else:
                    kept.append((name, client.answer(stream_id)))
            results = await asyncio.wait_for(
                asyncio.gather(*(f for _, f in kept), return_exceptions=True), 20
            )
            return [(n, r) for (n, _), r in zip(kept, results, strict=True)], client.closed.done()

    answers, closed = asyncio.run(run())
    assert not closed
    answered = 0
    for name, result in answers:
        if isinstance(result, ConnectionResetError):
            assert result.args == (DOQ_EXCESSIVE_LOAD,)
            continue
        assert isinstance(result, bytes), result
        message = dns.message.from_wire(result[2:])
        assert message.id == 0 and message.question[0].name.to_text() == name
        answered += 1
    assert answered >= len(answers) // 2
    _doq_answers(quic_server)
    _no_tracebacks(quic_server)


def _long_header(rng: random.Random, version: int, size: int) -> bytes:
    """A QUIC long-header packet (RFC 9000 17.2) of `version`, with random connection IDs
    and a random rest, `size` bytes in all."""
    dcid, scid = rng.randbytes(rng.randrange(0, 21)), rng.randbytes(rng.randrange(0, 21))
    head = (bytes([0xC0 | rng.randrange(64)]) + struct.pack("!I", version)
            + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid)  # fmt: skip
    return head + rng.randbytes(max(0, size - len(head)))


def test_doq_random_datagrams_are_dropped_or_get_version_negotiation(
    quic_server: ServerProcess,
) -> None:
    """Datagrams to the QUIC port that are not QUIC, or QUIC of a version we do not speak
    or that does not decrypt: dropped, but for Version Negotiation to an unknown version
    (RFC 9000 6); then a normal DoQ query is answered."""
    port = quic_port(quic_server)
    rng = random.Random(1411)
    unknown_versions = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        for i in range(200):
            kind = i % 4
            if kind == 0:
                data = rng.randbytes(rng.randrange(1, 1400))
                data = bytes([data[0] & 0x7F]) + data[1:]  # a short header: no connection
            elif kind == 1:
                data = _long_header(rng, 1, rng.choice([100, 1200, 1350]))  # QUIC v1, junk
            elif kind == 2:
                version = rng.randrange(1 << 32)
                while version in (0, 1, 0x6B3343CF):
                    version = rng.randrange(1 << 32)
                data = _long_header(rng, version, rng.choice([100, 1200]))
                unknown_versions += 1
            else:
                data = rng.randbytes(rng.randrange(1, 1400))
            sock.send(data)
        # The server reads one socket in order: once it answers this, it has read them all
        # (or the kernel dropped some, which is no reply either).
        _doq_answers(quic_server)
        replies = []
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                replies.append(sock.recv(2048))
    for reply in replies:
        assert reply[0] & 0x80 and reply[1:5] == b"\0\0\0\0", reply[:16]  # Version Negotiation
    # Not one for each: a header that does not parse (random lengths inside) is dropped.
    assert 1 <= len(replies) <= unknown_versions
    # None of it became a connection (the query's own one ends when its client closes).
    assert eventually(
        lambda: quic_server.metric("filterdns_listener_connections", transport="quic") == 0
    )
    _no_tracebacks(quic_server)

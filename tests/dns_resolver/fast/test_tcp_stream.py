"""The C stream loop (`_stream.pyx`): DNS over TCP answered from C, over real sockets.

Cache hits and blocks on TCP connections are answered by the same C pipeline as UDP; the
rest goes to Python and comes back through C. These check that C really answers, that
pipelined queries are answered out of order and matched by ID, and the connection limits:
idle time (a slow client too), connections per listener, queries in flight, garbage.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from dns_resolver.fast import fastpath
from dns_resolver.transports import streampath
from tests.dns_resolver.harness import (
    LOOPBACK,
    FaultUpstream,
    ServerProcess,
    TestZone,
    eventually,
    query,
    to_toml,
    write_test_blocklist,
)

pytestmark = pytest.mark.skipif(
    not (fastpath.available() and streampath.TcpFastPath.available()),
    reason="fast path not built",
)

Z = TestZone


def _answers(server: ServerProcess) -> float:
    return server.metric("filterdns_fastpath_answers_total")


def _frame(msg: dns.message.Message | bytes) -> bytes:
    data = msg if isinstance(msg, bytes) else msg.to_wire()
    return struct.pack("!H", len(data)) + data


def _read_answer(s: socket.socket) -> dns.message.Message | None:
    """One framed answer from `s`, or None when the server closed the connection."""
    head = s.recv(2, socket.MSG_WAITALL)
    if len(head) < 2:
        return None
    length = struct.unpack("!H", head)[0]
    return dns.message.from_wire(s.recv(length, socket.MSG_WAITALL))


def _connect(server: ServerProcess, timeout: float = 3.0) -> socket.socket:
    return socket.create_connection((LOOPBACK, server.port), timeout=timeout)


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _query(name: str, qid: int, qtype: str = "A") -> dns.message.Message:
    msg = dns.message.make_query(name, qtype, use_edns=0)
    msg.id = qid
    return msg


def _slow_server(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
    tmp_path: Path,
    delay: float,
    **server: object,
) -> ServerProcess:
    """filterdns whose upstream answers every query after `delay` seconds (192.0.2.53),
    with the test blocklist, and `server` keys in [server]."""
    slow = make_fault_upstream(delay=delay)
    blocklist = write_test_blocklist(tmp_path)
    return start_filterdns(
        {
            "server": dict(server),
            "lists": [{"path": str(blocklist), "name": "test", "category": "adult"}],
        },
        upstreams=[slow.upstream],
    )


def test_tcp_cache_hits_and_blocks_are_answered_in_c(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd()
    first = server.dig(Z.WWW, "A", "+tcp")
    assert first.rdata("A") == [Z.WWW_A]
    before = _answers(server)
    again = server.dig(Z.WWW, "A", "+tcp")
    assert again.rdata("A") == [Z.WWW_A]
    assert _answers(server) == before + 1
    assert server.metric("filterdns_queries_total", qtype="A", protocol="tcp",
                         result="cached") == 1
    # A block: the first by a rule goes to Python, which teaches C its EDE; the next is
    # answered in C, byte for byte the same but for the ID.
    with _connect(server) as s:
        s.sendall(_frame(_query(Z.BLOCKED_SUB, 1)))
        python = _read_answer(s)
        before = _answers(server)
        s.sendall(_frame(_query(Z.BLOCKED_SUB, 2)))
        from_c = _read_answer(s)
    assert python is not None and from_c is not None
    assert _answers(server) == before + 1
    assert from_c.to_wire()[2:] == python.to_wire()[2:]
    assert from_c.rcode() == dns.rcode.NXDOMAIN
    text = server.dig(Z.BLOCKED_SUB, "A", "+tcp").ede_text
    assert "category=adult" in text and "list=test" in text
    assert server.metric("filterdns_queries_total", qtype="A", protocol="tcp",
                         result="blocked") == 3


def test_a_large_answer_is_served_whole_from_the_cache_over_tcp(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd()
    full = query(server.port, Z.BIGTXT, "TXT", tcp=True)
    before = _answers(server)
    again = query(server.port, Z.BIGTXT, "TXT", tcp=True, payload=512)
    assert _answers(server) == before + 1
    assert not again.flags & dns.flags.TC  # no UDP limit over TCP
    assert [r.strings for r in again.answer[0]] == [r.strings for r in full.answer[0]]
    assert len(again.to_wire()) > 2000


def test_pipelined_queries_are_matched_by_id_and_a_slow_miss_comes_last(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
    tmp_path: Path,
) -> None:
    server = _slow_server(start_filterdns, make_fault_upstream, tmp_path, delay=0.5)
    # Teach C the block's EDE and cache a name (each is one slow upstream round trip).
    query(server.port, Z.BLOCKED, tcp=True, timeout=3)
    query(server.port, Z.WWW, tcp=True, timeout=3)
    names = [Z.WWW if i % 2 else Z.BLOCKED for i in range(40)]
    with _connect(server) as s:
        # The miss first, then 40 queries C answers, all in one write.
        s.sendall(b"".join(_frame(_query(n, 1000 + i)) for i, n in enumerate([Z.MX, *names])))
        replies = [_read_answer(s) for _ in range(41)]
    ids = [r.id for r in replies if r is not None]
    assert sorted(ids) == list(range(1000, 1041))
    assert ids[-1] == 1000  # the slow miss, answered after the 40 sent behind it
    by_id = {r.id: r for r in replies if r is not None}
    assert by_id[1002].answer[0][0].to_text() == "192.0.2.53"  # www (odd index 1)
    assert by_id[1001].rcode() == dns.rcode.NXDOMAIN  # blocked (index 0)
    # dnspython's own TCP framing, one write per query, a new miss first.
    with _connect(server) as s:
        for i, n in enumerate([Z.TXT, *names[:20]]):
            dns.query.send_tcp(s, _query(n, 2000 + i))
        got = [dns.query.receive_tcp(s, time.time() + 3)[0].id for _ in range(21)]
    assert sorted(got) == list(range(2000, 2021)) and got[-1] == 2000


def test_queries_beyond_the_in_flight_limit_wait_their_turn(
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
    tmp_path: Path,
) -> None:
    server = _slow_server(
        start_filterdns, make_fault_upstream, tmp_path, delay=0.3, tcp_max_inflight=1
    )
    query(server.port, Z.BLOCKED, tcp=True, timeout=3)
    with _connect(server) as s:
        # Two misses and a block: the second miss waits for the first answer, and the
        # block behind it waits for the second (frames are taken in order); without the
        # limit C would answer the block at once.
        s.sendall(b"".join(_frame(_query(n, i)) for i, n in
                           enumerate([Z.MX, Z.TXT, Z.BLOCKED], start=1)))
        ids = [r.id for r in (_read_answer(s) for _ in range(3)) if r is not None]
    assert ids == [1, 2, 3]


def test_an_idle_connection_and_a_slow_client_are_closed_at_the_idle_timeout(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd({"server": {"tcp_idle_timeout": 0.5}})
    with _connect(server) as idle:
        started = time.monotonic()
        assert _closed_by_server(idle)
        waited = time.monotonic() - started
    assert 0.4 <= waited < 2.0
    # A byte every 0.2 s never makes a query: closed at the idle timeout all the same.
    data = _frame(_query(Z.WWW, 7))
    with _connect(server) as slow:
        started = time.monotonic()
        sent = 0
        with pytest.raises(OSError):
            for i in range(len(data)):
                slow.send(data[i : i + 1])
                sent += 1
                time.sleep(0.2)  # the slow client under test, not a wait for the server
            raise AssertionError("the whole query went through")  # pragma: no cover
        waited = time.monotonic() - started
    assert sent < len(data)
    assert 0.4 <= waited < 3.0
    assert server.metric("filterdns_tcp_connections_closed_total", reason="idle") == 2
    # The listener goes on.
    assert query(server.port, Z.WWW, tcp=True).answer[0][0].to_text() == Z.WWW_A


def test_connections_beyond_the_limit_are_closed_and_the_listener_goes_on(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd({"server": {"tcp_max_connections": 3}})
    held = [_connect(server) for _ in range(3)]
    try:
        for i, s in enumerate(held):
            s.sendall(_frame(_query(Z.WWW, i)))
            reply = _read_answer(s)
            assert reply is not None and reply.id == i
        with _connect(server) as extra:
            assert _closed_by_server(extra)
        assert server.metric("filterdns_tcp_connections_refused_total") == 1
        assert server.metric("filterdns_tcp_connections") == 3
        held.pop().close()

        def answered() -> bool:
            try:
                return query(server.port, Z.WWW, tcp=True).answer[0][0].to_text() == Z.WWW_A
            except OSError:
                return False

        assert eventually(answered)
        # The three held connections still work.
        for i, s in enumerate(held):
            s.sendall(_frame(_query(Z.WWW, 10 + i)))
            reply = _read_answer(s)
            assert reply is not None and reply.id == 10 + i
    finally:
        for s in held:
            s.close()


def test_a_reload_applies_new_tcp_limits_to_new_connections(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd({"server": {"tcp_max_connections": 1}})
    with _connect(server) as first:
        first.sendall(_frame(_query(Z.WWW, 1)))
        assert _read_answer(first) is not None
        with _connect(server) as second:
            assert _closed_by_server(second)
        config = dict(server.config)
        config["server"] = {**config["server"], "tcp_max_connections": 2}
        server.config_path.write_text(to_toml(config), encoding="utf-8")
        server.send_signal(signal.SIGHUP)
        assert eventually(
            lambda: server.metric("filterdns_config_reloads_total", result="applied") == 1
        )
        with _connect(server) as second:
            second.sendall(_frame(_query(Z.WWW, 2)))
            reply = _read_answer(second)
            assert reply is not None and reply.id == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00",  # an empty frame
        _frame(b"\x12\x34\x01"),  # shorter than a header
        _frame(bytes.fromhex("abcd81800001000000000000") + b"\x00\x00\x01\x00\x01"),  # QR
        _frame(b"\xff" * 40),
    ],
    ids=["empty", "short", "response", "random"],
)
def test_garbage_closes_the_connection_after_the_answers_before_it(
    filterdns_on_nsd: Callable[..., ServerProcess], garbage: bytes
) -> None:
    server = filterdns_on_nsd()
    query(server.port, Z.WWW, tcp=True)  # cached: answered in C below
    with _connect(server) as s:
        s.sendall(_frame(_query(Z.WWW, 42)) + garbage + _frame(_query(Z.WWW, 43)))
        first = _read_answer(s)
        assert first is not None and first.id == 42
        assert _closed_by_server(s)
    assert server.metric("filterdns_tcp_connections_closed_total", reason="garbage") == 1
    assert query(server.port, Z.WWW, tcp=True).answer[0][0].to_text() == Z.WWW_A


def test_random_streams_never_stop_the_listener(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    """Fuzz: 200 connections of random frames (sane and insane lengths, random bytes,
    mutated queries), cut at random points, each after a good query; the good query is
    always answered, and the server answers a fresh client afterwards."""
    server = filterdns_on_nsd({"server": {"tcp_idle_timeout": 0.3}})
    query(server.port, Z.WWW, tcp=True)
    rng = random.Random(14)
    good = _query(Z.WWW, 0x1414).to_wire()
    for case in range(200):
        kind = case % 4
        if kind == 0:
            junk = rng.randbytes(rng.randrange(0, 80))  # any bytes, framing included
        elif kind == 1:
            body = rng.randbytes(rng.randrange(0, 600))
            junk = struct.pack("!H", len(body)) + body
        elif kind == 2:
            mutated = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            junk = _frame(bytes(mutated))
        else:
            junk = struct.pack("!H", rng.randrange(1, 65536)) + rng.randbytes(rng.randrange(40))
        stream = _frame(good) + junk
        with _connect(server) as s:
            at = 0
            while at < len(stream):
                step = rng.randrange(1, 64)
                s.sendall(stream[at : at + step])
                at += step
            first = _read_answer(s)
            assert first is not None and first.id == 0x1414, case
    assert server.running()
    assert query(server.port, Z.WWW, tcp=True).answer[0][0].to_text() == Z.WWW_A
    assert server.metric("filterdns_tcp_connections_accepted_total") >= 201


def test_query_log_lines_for_tcp_answers_from_c(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    log_path = tmp_path / "queries.jsonl"
    server = filterdns_on_nsd({"querylog": {"enabled": True, "path": str(log_path),
                                            "anonymize": "none"}})
    query(server.port, Z.WWW, tcp=True)
    before = _answers(server)
    query(server.port, Z.WWW, tcp=True)
    assert _answers(server) == before + 1

    def lines() -> list[dict[str, object]]:
        if not log_path.exists():
            return []
        return [json.loads(line) for line in log_path.read_text().splitlines()]

    assert eventually(lambda: len(lines()) == 2)
    python, from_c = lines()
    assert python["protocol"] == from_c["protocol"] == "tcp"
    assert python["result"] == "allowed" and from_c["result"] == "cached"
    assert from_c["client"] == LOOPBACK and from_c["qname"] == Z.WWW.rstrip(".")
    assert set(from_c) == set(python)


def test_fast_path_off_serves_tcp_from_asyncio(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd({"server": {"fast_path": False}})
    for _ in range(2):
        assert query(server.port, Z.WWW, tcp=True).answer[0][0].to_text() == Z.WWW_A
    assert server.metric("filterdns_fastpath_answers_total") == 0
    assert server.metric("filterdns_queries_total", qtype="A", protocol="tcp",
                         result="cached") == 1

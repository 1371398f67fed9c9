"""DoT served from the C stream loop (`_stream.pyx` with `_tls.pyx`): what the listener
tests (test_listen_tls.py, on both paths) do not reach: many pipelined queries in one
write, kdig reusing one connection, a TLS 1.2 client, truncated and corrupted TLS records,
the C ClientID and padding rules against their Python originals, the asyncio listener
kept for `trusted_proxies`, and memory over 10,000 connections."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from dns_resolver import edns
from dns_resolver.fast._tls import client_id, padded
from dns_resolver.transports import certs
from tests.dns_resolver.encrypted import (
    KID,
    SERVER_NAME,
    client_context,
    dot_port,
    dot_query,
    encrypted_config,
    read_framed,
    send_framed,
    tls_connect,
)
from tests.dns_resolver.harness import LOOPBACK, ServerProcess, TestZone, eventually, kdig

Start = Callable[..., ServerProcess]
C_LOOP = "DNS over TLS is served from the C stream loop"


@pytest.fixture
def dot(filterdns_on_nsd: Start, tmp_path: Path) -> ServerProcess:
    server = filterdns_on_nsd(encrypted_config(tmp_path))
    assert C_LOOP in server.stderr_text()
    return server


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_pipelined_burst_in_one_write_is_answered_in_full(dot: ServerProcess) -> None:
    port = dot_port(dot)
    names = [TestZone.WWW, TestZone.BLOCKED] * 100
    queries = [dns.message.make_query(n, "A", id=i, use_edns=0) for i, n in enumerate(names)]
    with tls_connect(port, sni=SERVER_NAME) as sock:
        wires = [q.to_wire() for q in queries]
        sock.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
        answers = {a.id: a for a in (dns.message.from_wire(read_framed(sock)) for _ in queries)}
    assert sorted(answers) == list(range(len(names)))
    for i, name in enumerate(names):
        assert answers[i].question[0].name.to_text() == name
        assert answers[i].rcode() == dns.rcode.NOERROR
        assert len(answers[i].to_wire()) % 468 == 0  # padded, from C or from Python
    # The repeated names were answered in C, from the cache, and counted as DoT.
    assert dot.metric("filterdns_fastpath_answers_total") >= 100
    assert dot.metric("filterdns_queries_total", protocol="tls") == len(names)
    assert dot.metric("filterdns_queries_total", protocol="tcp") == 0


def test_kdig_keeps_one_connection_for_its_queries(dot: ServerProcess) -> None:
    port = dot_port(dot)
    # kdig's options after a name are that query's: each repeats them to share the connection.
    same = ("+tls", "+keepopen", "+timeout=2", "+retry=0")
    result = kdig(LOOPBACK, port, TestZone.WWW, "A", *same,
                  TestZone.BLOCKED, "A", *same, TestZone.WWW, "AAAA", *same)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("status: NOERROR") == 3
    assert dot.metric("filterdns_listener_accepted_total", transport="tls") == 1


def test_a_tls12_client_is_served_and_older_ones_refused(dot: ServerProcess) -> None:
    port = dot_port(dot)
    ctx = client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection((LOOPBACK, port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=f"{KID}.{SERVER_NAME}") as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.selected_alpn_protocol() == "dot"
        send_framed(tls, dns.message.make_query(TestZone.BLOCKED, "A").to_wire())
        # The ClientID selects the kid policy over TLS 1.2 too.
        assert dns.message.from_wire(read_framed(tls)).rcode() == dns.rcode.NXDOMAIN
    old = client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # an old client is the point
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        old.wrap_socket(raw).close()
    assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR


def _closed() -> contextlib.AbstractContextManager[None]:
    """The server ending a connection, seen by the client as EOF or as any socket error
    (a reset, or not connected any more)."""
    return contextlib.suppress(OSError)


def test_a_name_we_do_not_serve_gets_the_unrecognized_name_alert(dot: ServerProcess) -> None:
    port = dot_port(dot)
    for name in ("dns.elsewhere.example", f"a.{KID}.{SERVER_NAME}"):
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            tls_connect(port, sni=name)
    assert dot.metric("filterdns_listener_errors_total", transport="tls", kind="server_name") == 2
    assert dot.metric("filterdns_listener_errors_total", transport="tls", kind="handshake") == 0


def _client_hello() -> bytes:
    """The bytes of a real ClientHello (from an in-memory client handshake)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing, server_hostname=SERVER_NAME)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_truncated_and_corrupted_tls_records_close_cleanly(dot: ServerProcess) -> None:
    port = dot_port(dot)
    hello = _client_hello()
    rng = random.Random(14)
    cases = [hello[:n] for n in (1, 3, 5, 6, 40, len(hello) - 1)]
    for _ in range(30):
        data = bytearray(hello[: rng.randrange(1, len(hello) + 1)])
        for _ in range(rng.randrange(0, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    for data in cases:
        # The server may have closed already (a corrupted header): any OSError is its close.
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock, _closed():
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # truncated: the record never completes
            while sock.recv(4096):
                pass
    # After a handshake, a torn application record (its header, half its body) and a
    # record of garbage each end that connection and no other.
    for tail in (b"\x17\x03\x03\x00\x40" + bytes(20), b"\x17\x03\x03\x00\x10" + bytes(16)):
        with tls_connect(port) as tls:
            send_framed(tls, dns.message.make_query(TestZone.WWW, "A").to_wire())
            assert read_framed(tls)
            with socket.socket(fileno=tls.detach()) as raw, _closed():
                raw.settimeout(5)
                raw.sendall(tail)
                raw.shutdown(socket.SHUT_WR)
                while raw.recv(4096):
                    pass
    assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR
    assert eventually(
        lambda: dot.metric("filterdns_listener_connections", transport="tls") == 0
    )
    assert dot.metric("filterdns_listener_errors_total", transport="tls", kind="handshake") >= 30


def test_client_ids_and_padding_as_python_computes_them() -> None:
    names = [None, "", SERVER_NAME, SERVER_NAME.upper() + ".", f"{KID}.{SERVER_NAME}",
             f"a.{KID}.{SERVER_NAME}", f".{SERVER_NAME}", "elsewhere.example", "x" * 300]
    for name in names:
        for ours in (SERVER_NAME, ""):
            assert client_id(name, ours) == certs.client_id_of(name, ours), (name, ours)
    for use_edns, size in ((0, 0), (0, 600), (False, 0)):
        q = dns.message.make_query("a" * 50 + ".example", "TXT", use_edns=use_edns)
        r = dns.message.make_response(q)
        if size:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "TXT",
                                                '"' + "x" * 250 + '"', '"' + "y" * 250 + '"'))
        wire = r.to_wire()
        assert padded(wire) == edns.pad(wire)


def test_trusted_proxies_keep_the_asyncio_listener(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    config = encrypted_config(tmp_path)
    config["server"]["trusted_proxies"] = ["192.0.2.0/24"]
    server = filterdns_on_nsd(config)
    assert C_LOOP not in server.stderr_text()
    assert dot_query(dot_port(server), TestZone.WWW).rcode() == dns.rcode.NOERROR


def test_10000_connections_leave_memory_bounded(dot: ServerProcess) -> None:
    port = dot_port(dot)
    ctx = client_context()
    wire = dns.message.make_query(TestZone.WWW, "A").to_wire()
    session = None

    def connections(n: int) -> None:
        nonlocal session
        for i in range(n):
            sock = socket.create_connection((LOOPBACK, port), timeout=5)
            if i % 3 == 2:
                sock.sendall(b"\x16\x03\x01\x00")  # a torn ClientHello: failed handshakes too
                sock.close()
                continue
            with ctx.wrap_socket(sock, session=session) as tls:
                send_framed(tls, wire)
                assert read_framed(tls)
                session = tls.session

    started = time.monotonic()
    connections(1000)  # the loop's tables and OpenSSL's caches reach their size
    assert eventually(lambda: dot.metric("filterdns_listener_connections", transport="tls") == 0)
    before = _rss_kib(dot.pid)
    connections(9000)
    assert eventually(lambda: dot.metric("filterdns_listener_connections", transport="tls") == 0)
    grown = _rss_kib(dot.pid) - before
    assert time.monotonic() - started < 240
    assert dot.metric("filterdns_tls_handshakes_total", transport="tls", resumed="true") > 5000
    # A leaked SSL object (tens of KiB with its buffers) per connection would be >100 MiB.
    assert grown < 16 * 1024, f"RSS grew {grown} KiB over 9,000 connections"


def _strict_connect(port: int) -> ssl.SSLSocket:
    """A TLS connection on which an EOF without close_notify raises SSLEOFError (Python
    reports it as a clean b"" otherwise)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    return client_context().wrap_socket(
        sock, server_hostname=SERVER_NAME, suppress_ragged_eofs=False
    )


def test_the_server_ends_connections_with_close_notify(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path, idle_timeout=0.5))
    port = dot_port(server)
    wire = dns.message.make_query(TestZone.WWW, "A").to_wire()
    # Idle: after its answer the connection stays quiet until the server ends it.
    with _strict_connect(port) as tls:
        send_framed(tls, wire)
        assert read_framed(tls)
        assert tls.recv(1) == b""  # close_notify; a bare TCP close raises SSLEOFError
    # Framing garbage (a zero-length frame): the answers before it, then close_notify.
    with _strict_connect(port) as tls:
        tls.sendall(len(wire).to_bytes(2, "big") + wire + b"\0\0")
        assert read_framed(tls)
        assert tls.recv(1) == b""
    # The client's close_notify is answered with the server's: unwrap() waits for it.
    with _strict_connect(port) as tls:
        send_framed(tls, wire)
        assert read_framed(tls)
        tls.unwrap().close()
    assert server.metric("filterdns_listener_errors_total", transport="tls", kind="idle") == 1
    # Shutting down: every open connection gets close_notify.
    with _strict_connect(port) as tls:
        send_framed(tls, wire)
        assert read_framed(tls)
        server.send_signal(signal.SIGTERM)
        assert tls.recv(1) == b""
    assert server.proc.wait(5) == 0

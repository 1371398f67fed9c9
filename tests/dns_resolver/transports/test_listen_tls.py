"""DNS over TLS (RFC 7858) with real clients against `filterdns serve`: kdig and dnspython,
ClientIDs from the TLS server name, pipelining answered out of order, padding, the
certificate (self-signed, rotated by SIGHUP and on disk) and the bad input a listener
must survive (plain DNS, random bytes, a name we do not serve, a slow client, too many
connections, 2,000 idle connections)."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest

from dns_resolver.transports.certs import fingerprint
from tests.dns_resolver.encrypted import (
    KID,
    SERVER_NAME,
    client_context,
    dot_port,
    dot_query,
    encrypted_config,
    log_lines,
    make_cert,
    peer_fingerprint,
    read_framed,
    send_framed,
    tls_connect,
    until,
)
from tests.dns_resolver.harness import (
    LOOPBACK,
    FaultUpstream,
    ServerProcess,
    TestZone,
    eventually,
    kdig,
    to_toml,
)

Start = Callable[..., ServerProcess]


C_LOOP = "DNS over TLS is served from the C stream loop"


@pytest.fixture(params=[True, False], ids=["c", "asyncio"])
def dot(filterdns_on_nsd: Start, tmp_path: Path, request: pytest.FixtureRequest) -> ServerProcess:
    """A DoT server; from the C stream loop with the fast path on, else from asyncio."""
    config = encrypted_config(tmp_path)
    config["server"]["fast_path"] = request.param
    server = filterdns_on_nsd(config)
    assert (C_LOOP in server.stderr_text()) == request.param
    return server


def test_kdig_with_and_without_a_client_id(dot: ServerProcess, tmp_path: Path) -> None:
    port = dot_port(dot)
    plain = kdig(LOOPBACK, port, TestZone.BLOCKED, "A", "+tls")
    assert plain.status == "NOERROR" and plain.rdata("A") == [TestZone.BLOCKED_A]
    kid = kdig(LOOPBACK, port, TestZone.BLOCKED, "A", "+tls", f"+tls-sni={KID}.{SERVER_NAME}")
    assert kid.status == "NXDOMAIN"
    assert "policy=kid" in kid.ede_text
    # Our own name gives no ClientID; an unknown one below it gets what the address gets.
    for sni in (SERVER_NAME, f"nobody.{SERVER_NAME}"):
        other = kdig(LOOPBACK, port, TestZone.BLOCKED, "A", "+tls", f"+tls-sni={sni}")
        assert other.status == "NOERROR", sni
    # The same address over plain UDP is not blocked either: the ClientID made the difference.
    assert dot.query(TestZone.BLOCKED).rcode() == dns.rcode.NOERROR
    assert until(lambda: len(log_lines(tmp_path / "queries.log")) >= 5)
    lines = log_lines(tmp_path / "queries.log")
    assert {line["protocol"] for line in lines} == {"tls", "udp"}
    assert [line["result"] for line in lines if line["protocol"] == "tls"].count("blocked") == 1
    assert dot.metric("filterdns_queries_total", protocol="tls", result="blocked") == 1
    assert dot.metric("filterdns_tls_handshakes_total", transport="tls") == 4


def test_dnspython_and_padding(dot: ServerProcess) -> None:
    port = dot_port(dot)
    padded = dot_query(port, TestZone.WWW, sni=f"{KID}.{SERVER_NAME}")
    assert [rr.to_text() for rr in padded.answer[0]] == [TestZone.WWW_A]
    wire = padded.to_wire()
    assert len(wire) % 468 == 0
    assert any(opt.otype == dns.edns.OptionType.PADDING for opt in padded.options)
    # Without EDNS there is no OPT to pad in.
    bare = dot_query(port, TestZone.WWW, use_edns=False)
    assert bare.edns < 0 and len(bare.to_wire()) % 468 != 0


def test_pipelined_queries_are_answered_out_of_order(
    filterdns_on_nsd: Start, make_fault_upstream: Callable[..., FaultUpstream], tmp_path: Path
) -> None:
    slow = make_fault_upstream(delay=1.0)
    config = encrypted_config(tmp_path)
    config["forward"] = [{"domains": ["slow.example"], "servers": [slow.upstream]}]
    server = filterdns_on_nsd(config)
    with tls_connect(dot_port(server)) as sock:
        first = dns.message.make_query("a.slow.example", "A", id=1)
        second = dns.message.make_query(TestZone.WWW, "A", id=2)
        send_framed(sock, first.to_wire())
        send_framed(sock, second.to_wire())
        answers = [dns.message.from_wire(read_framed(sock)) for _ in range(2)]
    assert [a.id for a in answers] == [2, 1]
    assert answers[1].answer[0][0].to_text() == "192.0.2.53"


def test_a_server_name_we_do_not_serve_is_refused(dot: ServerProcess) -> None:
    port = dot_port(dot)
    # OpenSSL ends the handshake with unrecognized_name; asyncio's TLS layer closes the
    # connection without flushing that alert, so the client may see the close alone.
    refused = "UNRECOGNIZED_NAME|UNEXPECTED_EOF"
    with pytest.raises(ssl.SSLError, match=refused):
        tls_connect(port, sni="dns.elsewhere.example")
    with pytest.raises(ssl.SSLError, match=refused):
        tls_connect(port, sni=f"a.{KID}.{SERVER_NAME}")  # two labels below ours
    assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR  # the listener goes on
    assert dot.metric("filterdns_listener_errors_total", transport="tls", kind="server_name") == 2


@pytest.mark.parametrize(
    "payload",
    [
        # A fixed ID: one with its top bit set reads as an SSLv2 record header, whose
        # length OpenSSL then waits for (a handshake timeout, not a failed handshake).
        dns.message.make_query("www.filterdns.test", "A", id=0x1234).to_wire(),  # unframed
        b"\x00\x1d" + dns.message.make_query("www.filterdns.test", "A", id=0x1234).to_wire(),
        bytes(range(256)) * 4,  # random bytes
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_plain_dns_or_garbage_to_the_tls_port_is_a_clean_close(
    dot: ServerProcess, payload: bytes
) -> None:
    port = dot_port(dot)
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(payload)
        sock.settimeout(5)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    # Nothing but, at most, a TLS alert record (content type 21) before the close.
    assert received == b"" or received[0] == 21
    assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR
    # The server counts the failed handshake as it closes: the client may see the close first.
    assert eventually(
        lambda: dot.metric("filterdns_listener_errors_total", transport="tls", kind="handshake")
        == 1
    )


def test_a_slow_client_is_closed_and_others_are_served(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path, idle_timeout=1.0))
    port = dot_port(server)
    wire = dns.message.make_query(TestZone.WWW, "A").to_wire()
    framed = len(wire).to_bytes(2, "big") + wire
    with tls_connect(port) as sock:
        started = time.monotonic()
        closed = False
        for byte in framed:  # a byte every 0.2 s: the whole query would take seconds
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        if not closed:
            sock.settimeout(3)
            closed = sock.recv(1) == b""
        assert closed
        assert time.monotonic() - started < 5
    assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR
    assert server.metric("filterdns_listener_errors_total", transport="tls", kind="idle") >= 1


def test_connections_over_the_limit_are_closed_at_once(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path, max_connections=3))
    port = dot_port(server)
    held = [tls_connect(port) for _ in range(3)]
    try:
        assert eventually(
            lambda: server.metric("filterdns_listener_connections", transport="tls") == 3
        )
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_connect(port)
        assert server.metric(
            "filterdns_listener_errors_total", transport="tls", kind="max_connections"
        ) == 1
    finally:
        for sock in held:
            sock.close()
    assert eventually(
        lambda: server.metric("filterdns_listener_connections", transport="tls") == 0
    )
    assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR


def test_the_self_signed_certificate_is_generated_once_and_logged(
    dot: ServerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "tls" / "self-signed.pem"
    assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
    served = peer_fingerprint(dot_port(dot))
    assert served == fingerprint(path)
    assert f"SHA-256 fingerprint {served}" in dot.stderr_text()
    with tls_connect(dot_port(dot)) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")


def _keep_connecting(port: int, stop: threading.Event, seen: set[str], failures: list[str]) -> None:
    while not stop.is_set():
        try:
            seen.add(peer_fingerprint(port))
            assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR
        except Exception as exc:  # any refused or failed connection fails the test
            failures.append(repr(exc))


def _rotate(tmp_path: Path, server: ServerProcess, replace: Callable[[], Any]) -> None:
    port = dot_port(server)
    first = peer_fingerprint(port)
    stop, seen, failures = threading.Event(), set[str](), list[str]()
    worker = threading.Thread(target=_keep_connecting, args=(port, stop, seen, failures))
    worker.start()
    try:
        new = replace()
        assert until(lambda: new in seen)
    finally:
        stop.set()
        worker.join(10)
    assert failures == []
    assert first != new and peer_fingerprint(port) == new


def test_certificate_rotation_by_sighup_refuses_no_connection(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    cert, key = make_cert(tmp_path, SERVER_NAME)
    server = filterdns_on_nsd(encrypted_config(tmp_path, cert=str(cert), key=str(key)))
    assert peer_fingerprint(dot_port(server)) == fingerprint(cert)

    def replace() -> str:
        new_cert, new_key = make_cert(tmp_path, SERVER_NAME, stem="next")
        # Same paths, new content, same modification time second: only SIGHUP tells.
        stat = cert.stat()
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        os.utime(cert, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        server.send_signal(signal.SIGHUP)
        return fingerprint(cert)

    _rotate(tmp_path, server, replace)


def test_certificate_files_changed_on_disk_are_picked_up(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    cert, key = make_cert(tmp_path, SERVER_NAME)
    server = filterdns_on_nsd(encrypted_config(tmp_path, cert=str(cert), key=str(key)))

    def replace() -> str:
        new_cert, new_key = make_cert(tmp_path, SERVER_NAME, stem="next")
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        return fingerprint(cert)

    _rotate(tmp_path, server, replace)


def test_a_broken_certificate_keeps_the_one_in_force(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    cert, key = make_cert(tmp_path, SERVER_NAME)
    server = filterdns_on_nsd(encrypted_config(tmp_path, cert=str(cert), key=str(key)))
    before = peer_fingerprint(dot_port(server))
    key.write_text("not a key\n")
    server.send_signal(signal.SIGHUP)
    assert until(lambda: "TLS certificate not reloaded" in server.stderr_text())
    assert peer_fingerprint(dot_port(server)) == before
    assert dot_query(dot_port(server), TestZone.WWW).rcode() == dns.rcode.NOERROR


def test_a_certificate_that_cannot_be_loaded_stops_the_start(
    start_filterdns: Start, tmp_path: Path
) -> None:
    (tmp_path / "bad.crt").write_text("nonsense\n")
    (tmp_path / "bad.key").write_text("nonsense\n")
    config = encrypted_config(tmp_path, cert="bad.crt", key="bad.key")
    with pytest.raises(RuntimeError, match="exited with status 2") as info:
        start_filterdns(config, upstreams=["127.0.0.1:1"], ready_timeout=10)
    assert re.search(r"cannot start the encrypted listeners: .*bad\.crt", str(info.value))


def test_2000_idle_connections_while_another_client_is_answered(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4500  # the test's 2,000 sockets; the server (a child) inherits the limit too
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        server = filterdns_on_nsd(encrypted_config(tmp_path, idle_timeout=120.0))
        port = dot_port(server)
        held: list[ssl.SSLSocket] = []
        try:
            deadline = time.monotonic() + 120
            while len(held) < 2000:
                assert time.monotonic() < deadline, f"only {len(held)} connections in 120 s"
                held.append(tls_connect(port))
            assert eventually(
                lambda: server.metric("filterdns_listener_connections", transport="tls") == 2000,
                timeout=30,
            )
            started = time.monotonic()
            for _ in range(20):
                assert dot_query(port, TestZone.WWW).rcode() == dns.rcode.NOERROR
            assert server.query(TestZone.WWW).rcode() == dns.rcode.NOERROR
            assert time.monotonic() - started < 30
        finally:
            for sock in held:
                sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _resumed(
    ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession | None]:
    """Connect (offering `session`), ask one query (TLS 1.3 sends its tickets after the
    handshake), and say whether the session was resumed; the session to offer next."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    with ctx.wrap_socket(sock, session=session) as tls:
        send_framed(tls, dns.message.make_query(TestZone.WWW, "A").to_wire())
        assert dns.message.from_wire(read_framed(tls)).rcode() == dns.rcode.NOERROR
        return tls.session_reused, tls.session


def test_sessions_resume_until_the_ticket_key_rotates(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path, ticket_rotation=3))
    port = dot_port(server)
    ctx = client_context()
    resumed, session = _resumed(ctx, port, None)
    assert not resumed
    resumed, _ = _resumed(ctx, port, session)
    assert resumed
    # After a rotation the old ticket is not accepted any more: a full handshake.
    assert until(lambda: not _resumed(ctx, port, session)[0])
    assert server.metric("filterdns_tls_handshakes_total", transport="tls", resumed="true") >= 1
    assert server.metric("filterdns_tls_handshakes_total", transport="tls", resumed="false") >= 2


def test_a_client_that_never_shakes_hands_is_closed(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path, handshake_timeout=1.0))
    with socket.create_connection((LOOPBACK, dot_port(server)), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, nothing sent
        assert time.monotonic() - started < 4
    assert eventually(
        lambda: server.metric(
            "filterdns_listener_errors_total", transport="tls", kind="handshake_timeout"
        ) == 1
    )
    # A client offering only another protocol (ALPN h2) still gets DNS over TLS.
    with tls_connect(dot_port(server), alpn=("h2",)) as tls:
        assert tls.selected_alpn_protocol() is None
        send_framed(tls, dns.message.make_query(TestZone.WWW, "A").to_wire())
        assert dns.message.from_wire(read_framed(tls)).rcode() == dns.rcode.NOERROR


def test_tls_settings_apply_on_sighup(filterdns_on_nsd: Start, tmp_path: Path) -> None:
    server = filterdns_on_nsd(encrypted_config(tmp_path))
    port = dot_port(server)
    new_name = "filter.example.net"
    config = dict(server.config)
    config["tls"] = {**config["tls"], "server_name": new_name}
    server.config_path.write_text(to_toml(config), encoding="utf-8")
    server.send_signal(signal.SIGHUP)

    def moved() -> bool:
        try:
            answer = dot_query(port, TestZone.BLOCKED, sni=f"{KID}.{new_name}")
        except (ssl.SSLError, OSError):
            return False
        return answer.rcode() == dns.rcode.NXDOMAIN

    assert until(moved)
    with pytest.raises(ssl.SSLError):
        tls_connect(port, sni=f"{KID}.{SERVER_NAME}")  # the old name is not ours any more
    assert "restart needed" not in server.stderr_text()

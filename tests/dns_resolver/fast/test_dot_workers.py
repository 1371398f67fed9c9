"""DoT served from the C stream loop with `server.workers = 2`: each worker's listener on
the same port (SO_REUSEPORT), connections answered by both, ClientIDs honoured in each,
and a certificate rotated by SIGHUP reaching every worker."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode

from dns_resolver.transports.certs import fingerprint
from tests.dns_resolver.encrypted import (
    KID,
    SERVER_NAME,
    dot_port,
    encrypted_config,
    make_cert,
    read_framed,
    send_framed,
    sock_fingerprint,
    tls_connect,
    until,
)
from tests.dns_resolver.harness import ServerProcess, TestZone, eventually

Start = Callable[..., ServerProcess]
CONNECTIONS = 40  # spread by the kernel's hash: all on one worker has odds of 2**-39


def _worker_of(tls: ssl.SSLSocket, port: int) -> int:
    """The pid of the process holding the server side of connection `tls`."""
    client_port = tls.getsockname()[1]
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    pids = set(re.findall(r"pid=(\d+)", out))
    assert len(pids) == 1, out
    return int(pids.pop())


def _ask(tls: ssl.SSLSocket, name: str) -> int:
    send_framed(tls, dns.message.make_query(name, "A", use_edns=0).to_wire())
    return dns.message.from_wire(read_framed(tls)).rcode()


def _serve_round(port: int, cert_fingerprint: str) -> set[int]:
    """CONNECTIONS connections, every other one with the kid ClientID, each asking for the
    blocked name twice (the second from C); the workers that served them."""
    workers = set()
    for i in range(CONNECTIONS):
        kid = i % 2 == 0
        with tls_connect(port, sni=f"{KID}.{SERVER_NAME}" if kid else SERVER_NAME) as tls:
            assert sock_fingerprint(tls) == cert_fingerprint
            expected = dns.rcode.NXDOMAIN if kid else dns.rcode.NOERROR
            assert _ask(tls, TestZone.BLOCKED) == expected
            assert _ask(tls, TestZone.BLOCKED) == expected
            workers.add(_worker_of(tls, port))
    return workers


def _presents(port: int, expected: str, workers: set[int]) -> bool:
    """Whether new connections see certificate `expected` from every one of `workers`."""
    shown: set[int] = set()
    for _ in range(CONNECTIONS):
        with tls_connect(port) as tls:
            if sock_fingerprint(tls) != expected:
                return False
            shown.add(_worker_of(tls, port))
        if shown == workers:
            return True
    return False


def test_dot_from_c_with_two_workers(filterdns_on_nsd: Start, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, SERVER_NAME)
    config = encrypted_config(tmp_path, cert=str(cert), key=str(key))
    config["server"]["workers"] = 2
    server = filterdns_on_nsd(config)
    # The server answers once one worker is up; the other may still be starting.
    assert eventually(
        lambda: server.stderr_text().count("DNS over TLS is served from the C stream loop") == 2,
        10,
    )
    port = dot_port(server)
    # Both workers listen once each has reported in: poll until both took a connection.
    seen: set[int] = set()

    def both_listen() -> bool:
        with tls_connect(port) as tls:
            seen.add(_worker_of(tls, port))
        return len(seen) == 2

    assert until(both_listen)
    assert server.pid not in seen  # the parent serves no client
    assert _serve_round(port, fingerprint(cert)) == seen
    # C answered the repeated queries in both workers (the metrics are their sum).
    assert server.metric("filterdns_fastpath_answers_total") >= CONNECTIONS
    assert server.metric("filterdns_queries_total", protocol="tls", result="blocked") == CONNECTIONS

    # A new certificate at the same paths, and SIGHUP: every worker presents it. The
    # modification time is kept, so only SIGHUP tells (not the poll of the files).
    new_cert, new_key = make_cert(tmp_path, SERVER_NAME, stem="next")
    stat = cert.stat()
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    os.utime(cert, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    server.send_signal(signal.SIGHUP)
    assert until(lambda: _presents(port, fingerprint(cert), seen))
    assert _serve_round(port, fingerprint(cert)) == seen


def test_two_workers_serve_one_self_signed_certificate(
    filterdns_on_nsd: Start, tmp_path: Path
) -> None:
    config = encrypted_config(tmp_path)
    config["server"]["workers"] = 2
    server = filterdns_on_nsd(config)
    port = dot_port(server)
    pem = tmp_path / "tls" / "self-signed.pem"
    workers: set[int] = set()

    def both_present_the_file() -> bool:
        with tls_connect(port) as tls:
            assert sock_fingerprint(tls) == fingerprint(pem)
            workers.add(_worker_of(tls, port))
        return len(workers) == 2

    # The workers may race to generate it: one file lands, and both serve it.
    assert until(both_present_the_file)

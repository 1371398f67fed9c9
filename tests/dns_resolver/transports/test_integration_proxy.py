"""The PROXY protocol end to end: `filterdns serve` behind dnsdist (a real load balancer
that sends PROXY v2 to its backends over TCP), and raw PROXY v1/v2 headers from a trusted
and an untrusted address, in front of plain TCP and of DoT; the policy follows the address
the header carries."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from dns_resolver.transports.proxy_protocol import V2_SIGNATURE
from tests.dns_resolver.encrypted import (
    SERVER_NAME,
    client_context,
    doh_port,
    dot_port,
    encrypted_config,
    read_framed,
    send_framed,
)
from tests.dns_resolver.harness import (
    NsdServer,
    ServerProcess,
    TestZone,
    dig,
    free_port,
    send_raw_tcp,
    wait_for_dns,
    write_list,
)
from tests.processes import terminate

CHILD, OTHER, PROXY, STRANGER = "127.0.0.2", "127.0.0.1", "127.0.0.3", "127.0.0.4"
ADULT = TestZone.BLOCKED.rstrip(".")
DNSDIST = shutil.which("dnsdist") or shutil.which("dnsdist", path="/usr/bin:/usr/sbin")


@pytest.fixture
def server(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> ServerProcess:
    config = {
        "server": {"trusted_proxies": [f"{PROXY}/32"], "proxy_required": True},
        "upstream": {"servers": [nsd_upstream.upstream]},
        "lists": [{"path": str(write_list(tmp_path, [ADULT], "adult.txt")),
                   "category": "adult"}],
        "policies": {
            "child": {"clients": [f"{CHILD}/32"], "block": ["adult"]},
            "default": {"block": []},
        },
    }
    return start_filterdns(config)


@pytest.fixture
def dnsdist(tmp_path: Path, server: ServerProcess) -> Iterator[int]:
    """dnsdist on a port of its own, forwarding over TCP from PROXY's address to `server`
    with a PROXY v2 header; yields its port."""
    assert DNSDIST, "dnsdist is not installed (apt-get install dnsdist)"
    port = free_port()
    conf = tmp_path / "dnsdist.conf"
    # The backend is marked up by hand: dnsdist's health checks would be UDP without the
    # header. No packet cache: each client's answer must come from filterdns.
    conf.write_text(
        f'setLocal("127.0.0.1:{port}")\n'
        'setACL({"127.0.0.0/8"})\n'
        f's = newServer({{address="127.0.0.1:{server.port}", useProxyProtocol=true, '
        f'tcpOnly=true, source="{PROXY}", checkInterval=3600}})\n'
        "s:setUp()\n"
    )
    log = (tmp_path / "dnsdist.log").open("wb")
    proc = subprocess.Popen(
        [DNSDIST, "--supervised", "--disable-syslog", "-C", str(conf)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        assert wait_for_dns(port, is_alive=lambda: proc.poll() is None), (
            tmp_path / "dnsdist.log").read_text()
        yield port
    finally:
        terminate(proc)
        log.close()


def test_dnsdist_in_front_passes_the_client_address_and_its_policy(
    server: ServerProcess, dnsdist: int
) -> None:
    child = dig("127.0.0.1", dnsdist, ADULT, "A", "-b", CHILD)
    assert child.status == "NXDOMAIN", child.stdout
    assert child.ede == [(17, f"blocked: category=adult list=adult rule={ADULT} policy=child")]
    other = dig("127.0.0.1", dnsdist, ADULT, "A", "-b", OTHER)
    assert other.status == "NOERROR" and other.rdata("A") == [TestZone.BLOCKED_A]


def _v2(source: str) -> bytes:
    a, b, c, d = (int(x) for x in source.split("."))
    body = bytes([a, b, c, d, 127, 0, 0, 1]) + (40000).to_bytes(2, "big") + (53).to_bytes(
        2, "big")
    return V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body


def _status(reply: bytes | None) -> str | None:
    return None if reply is None else dns.rcode.to_text(dns.message.from_wire(reply).rcode())


def test_raw_headers_from_the_trusted_address_and_from_anyone_else(
    server: ServerProcess,
) -> None:
    query = dns.message.make_query(ADULT, "A").to_wire()

    def ask(source: str, prefix: bytes) -> str | None:
        return _status(send_raw_tcp(server.port, query, source=source, prefix=prefix))

    assert ask(PROXY, _v2(CHILD)) == "NXDOMAIN"
    assert ask(PROXY, _v2(OTHER)) == "NOERROR"
    assert ask(PROXY, f"PROXY TCP4 {CHILD} 127.0.0.1 4000 53\r\n".encode()) == "NXDOMAIN"
    # From anyone else a header closes the connection: nobody picks their own policy.
    assert ask(STRANGER, _v2(CHILD)) is None
    assert ask(OTHER, f"PROXY TCP4 {CHILD} 127.0.0.1 4000 53\r\n".encode()) is None
    # proxy_required: a bare connection from the proxy's address is closed too, and a
    # malformed header is.
    assert ask(PROXY, b"") is None
    assert ask(PROXY, V2_SIGNATURE + b"\x21\x11\x00\x03abc") is None
    # The listener goes on, over TCP and UDP alike.
    assert ask(CHILD, b"") == "NXDOMAIN"
    assert server.dig(ADULT, "A", "-b", OTHER).status == "NOERROR"
    assert server.dig(ADULT, "A", "+tcp", "-b", CHILD).status == "NXDOMAIN"
    assert server.running()


@pytest.fixture
def encrypted(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> ServerProcess:
    """DoT and DoH behind a trusted proxy at PROXY, the child policy at CHILD."""
    config = encrypted_config(tmp_path)
    config["server"].update(trusted_proxies=[f"{PROXY}/32"], proxy_required=True)
    config["upstream"] = {"servers": [nsd_upstream.upstream]}
    config["lists"] = [{"path": str(write_list(tmp_path, [ADULT], "adult.txt")),
                        "category": "adult"}]
    config["policies"]["child"] = {"clients": [f"{CHILD}/32"], "block": ["adult"]}
    return start_filterdns(config)


def _dot_status(port: int, source: str, prefix: bytes) -> str | None:
    """A DoT query for ADULT from `source`, after `prefix` sent in clear; its rcode, or
    None when the connection was closed (before or after the handshake)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    try:
        raw.sendall(prefix)
        with client_context().wrap_socket(raw, server_hostname=SERVER_NAME) as conn:
            send_framed(conn, dns.message.make_query(ADULT, "A").to_wire())
            return _status(read_framed(conn) or None)
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        raw.close()


def _doh_status(port: int, source: str, prefix: bytes) -> str | None:
    """A DoH GET (HTTP/1.1) for ADULT from `source` after `prefix` in clear; its rcode,
    or None when the connection was closed."""
    query = base64.urlsafe_b64encode(dns.message.make_query(ADULT, "A").to_wire())
    request = (f"GET /dns-query?dns={query.rstrip(b'=').decode()} HTTP/1.1\r\n"
               f"Host: {SERVER_NAME}\r\nAccept: application/dns-message\r\n"
               "Connection: close\r\n\r\n").encode()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    try:
        raw.sendall(prefix)
        with client_context(("http/1.1",)).wrap_socket(raw, server_hostname=SERVER_NAME) as conn:
            conn.sendall(request)
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        raw.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return _status(body)


def test_doh_takes_the_client_address_from_a_trusted_proxy(encrypted: ServerProcess) -> None:
    port = doh_port(encrypted)
    assert _doh_status(port, PROXY, _v2(CHILD)) == "NXDOMAIN"
    assert _doh_status(port, PROXY, _v2(OTHER)) == "NOERROR"
    assert _doh_status(port, STRANGER, _v2(CHILD)) is None
    assert _doh_status(port, CHILD, b"") == "NXDOMAIN"


def test_dot_takes_the_client_address_from_a_trusted_proxy(encrypted: ServerProcess) -> None:
    port = dot_port(encrypted)
    assert _dot_status(port, PROXY, _v2(CHILD)) == "NXDOMAIN"
    assert _dot_status(port, PROXY, _v2(OTHER)) == "NOERROR"
    assert _dot_status(port, PROXY, f"PROXY TCP4 {CHILD} 127.0.0.1 1 853\r\n".encode()) == (
        "NXDOMAIN")
    # A header from anyone else is no ClientHello: the handshake fails, the connection
    # closes. A bare connection from the proxy's address closes too (proxy_required).
    assert _dot_status(port, STRANGER, _v2(CHILD)) is None
    assert _dot_status(port, PROXY, b"") is None
    assert _dot_status(port, CHILD, b"") == "NXDOMAIN"
    assert encrypted.metric("filterdns_listener_errors_total", transport="tls",
                            kind="proxy") == 1

"""Helpers of the encrypted listener tests: a `filterdns serve` with DoT and DoH on free
ports and a ClientID policy, certificates made on the spot, and clients (dnspython over
TLS, raw TLS sockets, a raw aioquic DoQ client)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from tests.dns_resolver.harness import LOOPBACK, ServerProcess, free_port

SERVER_NAME = "dns.example.org"
KID = "k7f3q9x2"
"""The ClientID of the `kid` policy (blocks the test blocklist's category, `adult`)."""


def encrypted_config(tmp_path: Path, **tls: Any) -> dict[str, Any]:
    """DoT and DoH on free ports, `[tls]` with `SERVER_NAME` (plus `tls`), the query log on,
    a `kid` policy for `KID` that blocks `adult`, and a default policy that blocks nothing."""
    return {
        "server": {
            "listen_tls": [f"{LOOPBACK}:{free_port()}"],
            "listen_https": [f"{LOOPBACK}:{free_port()}"],
        },
        "tls": {"server_name": SERVER_NAME, **tls},
        "querylog": {"enabled": True, "path": str(tmp_path / "queries.log"), "anonymize": "none"},
        "policies": {
            "kid": {"client_ids": [KID], "block": ["adult"]},
            "default": {"block": []},
        },
    }


def dot_port(server: ServerProcess) -> int:
    return int(server.config["server"]["listen_tls"][0].rsplit(":", 1)[1])


def doh_port(server: ServerProcess) -> int:
    return int(server.config["server"]["listen_https"][0].rsplit(":", 1)[1])


def quic_port(server: ServerProcess) -> int:
    return int(server.config["server"]["listen_quic"][0].rsplit(":", 1)[1])


class RawDoq(QuicConnectionProtocol):
    """A DoQ client that sends whatever bytes it is given on a stream."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.answers: dict[int, asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[events.ConnectionTerminated] = self._loop.create_future()
        self.buf: dict[int, bytes] = {}

    def answer(self, stream_id: int) -> asyncio.Future[bytes]:
        """The bytes the server sends on `stream_id`, once it ends the stream."""
        return self.answers.setdefault(stream_id, self._loop.create_future())

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self.buf[event.stream_id] = self.buf.get(event.stream_id, b"") + event.data
            if event.end_stream:
                self.answer(event.stream_id).set_result(self.buf.pop(event.stream_id))
        elif isinstance(event, events.StreamReset):
            self.answer(event.stream_id).set_exception(
                ConnectionResetError(event.error_code)
            )
        elif isinstance(event, events.ConnectionTerminated) and not self.closed.done():
            self.closed.set_result(event)

    def send(self, data: bytes, end: bool = True, unidirectional: bool = False) -> int:
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()
        return stream_id


def doq_configuration(server_name: str = SERVER_NAME) -> QuicConfiguration:
    """A DoQ client's configuration that accepts any certificate."""
    return QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=server_name,
                             verify_mode=ssl.CERT_NONE)


def doq_framed(name: str, qid: int = 0) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    wire = q.to_wire()
    return struct.pack("!H", len(wire)) + wire


def client_context(alpn: tuple[str, ...] = ("dot",)) -> ssl.SSLContext:
    """A client context that accepts any certificate (the tests' are self-signed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def dot_query(
    port: int, name: str, qtype: str = "A", *, sni: str | None = None, **kw: Any
) -> dns.message.Message:
    """One query over DoT with dnspython (`sni`: the TLS server name to present)."""
    kw.setdefault("use_edns", 0)
    q = dns.message.make_query(name, qtype, **kw)
    return dns.query.tls(
        q, LOOPBACK, port=port, timeout=5, ssl_context=client_context(), server_hostname=sni
    )


def tls_connect(
    port: int, sni: str | None = None, alpn: tuple[str, ...] = ("dot",)
) -> ssl.SSLSocket:
    """A TLS connection to the listener (handshake done)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    try:
        return client_context(alpn).wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def send_framed(sock: socket.socket, wire: bytes) -> None:
    sock.sendall(struct.pack("!H", len(wire)) + wire)


def read_framed(sock: socket.socket) -> bytes:
    """One length-framed message; b"" when the server closed the connection."""
    head = _read_exactly(sock, 2)
    if len(head) < 2:
        return b""
    return _read_exactly(sock, struct.unpack("!H", head)[0])


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def peer_fingerprint(port: int) -> str:
    """SHA-256 of the certificate the listener presents now (as `certs.fingerprint`)."""
    with tls_connect(port) as sock:
        return sock_fingerprint(sock)


def sock_fingerprint(sock: ssl.SSLSocket) -> str:
    """SHA-256 of the certificate presented on connection `sock` (as `certs.fingerprint`)."""
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def make_cert(folder: Path, common_name: str, stem: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate and its key for `common_name` (and `*.common_name`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(common_name), x509.DNSName(f"*.{common_name}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def log_lines(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def until(check: Callable[[], bool]) -> bool:
    """`eventually` with a longer bound, for what waits on the certificate poll (2 s)."""
    from tests.dns_resolver.harness import eventually

    return eventually(check, timeout=10.0)

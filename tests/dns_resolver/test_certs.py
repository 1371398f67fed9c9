"""The encrypted listeners' pieces without a network: ClientIDs from TLS server names,
the self-signed certificate, the contexts' reload, and EDNS padding (RFC 7830/8467)."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import dns.edns
import dns.message
import pytest
from cryptography import x509

from dns_resolver import edns
from dns_resolver.certs import ALPN, CertificateError, ServerTls, client_id_of, fingerprint
from dns_resolver.certs import self_signed as make_self_signed
from fdconfig.tls import TlsConfig
from tests.dns_resolver.encrypted import make_cert


@pytest.mark.parametrize(
    ("sni", "ours", "expected"),
    [
        (None, "dns.example.org", (True, None)),  # connected by address
        ("dns.example.org", "dns.example.org", (True, None)),
        ("kid1.dns.example.org", "dns.example.org", (True, "kid1")),
        ("KID1.Dns.Example.Org.", "dns.example.org", (True, "kid1")),
        ("a.kid1.dns.example.org", "dns.example.org", (False, None)),
        ("dns.example.net", "dns.example.org", (False, None)),
        ("xdns.example.org", "dns.example.org", (False, None)),
        (".dns.example.org", "dns.example.org", (False, None)),
        ("anything.example", "", (True, None)),  # no server_name: all accepted, no ClientID
    ],
)
def test_client_id_of_the_server_name(
    sni: str | None, ours: str, expected: tuple[bool, str | None]
) -> None:
    assert client_id_of(sni, ours) == expected


def test_self_signed_certificate(tmp_path: Path) -> None:
    path = make_self_signed(tmp_path / "tls", "dns.example.org")
    assert path == tmp_path / "tls" / "self-signed.pem"
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "dns.example.org", "*.dns.example.org", "localhost",
    ]  # fmt: skip
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
    ]  # fmt: skip
    openssl = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert openssl.stdout.strip().endswith("=" + fingerprint(path))
    # Generated once: the next start serves the same certificate.
    before = path.read_bytes()
    assert make_self_signed(tmp_path / "tls", "dns.example.org").read_bytes() == before


def test_contexts_are_replaced_and_a_bad_pair_keeps_them(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "dns.example.org")
    tls = ServerTls(TlsConfig(cert=str(cert), key=str(key), server_name="dns.example.org"))
    assert set(tls.contexts) == set(ALPN)
    first = tls.context("tls")
    assert tls.reload(tls.config) and tls.context("tls") is not first
    second = tls.context("tls")
    key.write_text("broken\n")
    assert not tls.reload(tls.config)
    assert tls.context("tls") is second
    with pytest.raises(CertificateError, match="not a usable PEM certificate and key"):
        ServerTls(tls.config)


@pytest.mark.parametrize("labels", [1, 3, 7])
def test_padding_reaches_the_block_length(labels: int) -> None:
    query = dns.message.make_query("x" * 60 + ".x" * labels + ".example", "A", use_edns=0)
    response = dns.message.make_response(query)
    padded = edns.pad(response.to_wire())
    assert len(padded) % edns.PADDING_BLOCK == 0
    parsed = dns.message.from_wire(padded)
    assert [o.otype for o in parsed.options] == [dns.edns.OptionType.PADDING]
    assert parsed.question == response.question


def test_no_opt_no_padding() -> None:
    response = dns.message.make_response(dns.message.make_query("example.com", "A"))
    wire = response.to_wire()
    assert edns.pad(wire) == wire
    assert edns.pad(b"\x00\x01") == b"\x00\x01"  # not a message: left alone

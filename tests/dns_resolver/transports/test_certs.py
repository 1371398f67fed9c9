"""The encrypted listeners' pieces without a network: ClientIDs from TLS server names,
the self-signed certificate, the contexts' reload, and EDNS padding (RFC 7830/8467)."""

from __future__ import annotations

import base64
import ipaddress
import subprocess
from pathlib import Path

import dns.edns
import dns.message
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_resolver import edns
from dns_resolver.transports.certs import (
    ALPN,
    CertificateError,
    ServerTls,
    client_id_of,
    fingerprint,
)
from dns_resolver.transports.certs import self_signed as make_self_signed
from dns_resolver.transports.listen_https import decode_dns_parameter
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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_padding_leaves_what_is_not_ours_alone(data: bytes) -> None:
    """Random bytes come back unchanged or, when they happen to end in an OPT, padded
    with the header untouched."""
    out = edns.pad(data)
    assert out == data or (len(out) % edns.PADDING_BLOCK == 0 and out[:12] == data[:12])


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[a-z0-9]{1,63}(\.[a-z0-9]{1,63}){0,3}", fullmatch=True),
    st.text(max_size=300),
)
def test_padded_answers_still_parse(name: str, ede_text: str) -> None:
    query = dns.message.make_query(name + ".example", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.use_edns(0, options=[dns.edns.EDEOption(dns.edns.EDECode.FILTERED, ede_text)])
    wire = response.to_wire()
    padded = edns.pad(wire)
    assert len(padded) % edns.PADDING_BLOCK == 0
    parsed = dns.message.from_wire(padded)
    assert parsed.question == response.question
    assert [o.otype for o in parsed.options] == [
        dns.edns.OptionType.EDE, dns.edns.OptionType.PADDING,
    ]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_the_dns_parameter_decodes_or_says_why(text: str) -> None:
    try:
        data = decode_dns_parameter(text)
    except ValueError as exc:
        assert str(exc) == "the dns parameter is not base64url"
    else:
        assert isinstance(data, bytes)
        assert decode_dns_parameter(base64.urlsafe_b64encode(data).decode()) == data


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80)))
def test_any_server_name_gives_an_answer(name: str | None) -> None:
    accepted, client_id = client_id_of(name, "dns.example.org")
    assert client_id is None or (accepted and "." not in client_id and client_id)

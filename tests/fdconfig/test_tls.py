"""`[tls]`, the encrypted listeners of `[server]`, ClientIDs of `[policies.NAME]` and the
`serve` flags that set them: values, defaults and one-line errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fdconfig import COMMAND_LINE, Address, ConfigError, apply_overrides, load_config
from fdconfig.config import Config
from tests.fdconfig.test_config import error, load, write


def pem_pair(tmp_path: Path) -> tuple[Path, Path]:
    # The loader checks the files exist; their content is read by the listeners.
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("cert\n")
    key.write_text("key\n")
    return cert, key


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.server.listen_tls == config.server.listen_https == ()
    assert config.server.listen_quic == config.server.trusted_proxies == ()
    assert config.server.proxy_required is False
    tls = config.tls
    assert tls.self_signed and tls.cert == tls.key == tls.server_name == ""
    assert tls.self_signed_dir == str(tmp_path / "tls")
    assert (tls.max_connections, tls.max_inflight, tls.max_streams) == (10_000, 100, 100)
    assert (tls.idle_timeout, tls.handshake_timeout, tls.ticket_rotation) == (30.0, 5.0, 43_200.0)
    assert tls.padding is True


def test_values(tmp_path: Path) -> None:
    pem_pair(tmp_path)
    config = load(
        tmp_path,
        """
[server]
listen = ["127.0.0.1:5353"]
listen_tls = ["127.0.0.1:853", "[::1]:853", "127.0.0.1:853"]
listen_https = ["127.0.0.1:443"]
listen_quic = ["127.0.0.1:853"]
trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]
proxy_required = true
[tls]
cert = "fullchain.pem"
key = "privkey.pem"
server_name = "DNS.Example.ORG."
max_connections = 5
idle_timeout = 2.5
max_inflight = 3
max_streams = 7
ticket_rotation = "1h"
padding = false
""",
    )
    srv = config.server
    assert srv.listen_tls == (Address("127.0.0.1", 853), Address("::1", 853))
    assert srv.listen_https == (Address("127.0.0.1", 443),)
    assert srv.listen_quic == (Address("127.0.0.1", 853),)  # UDP: beside DoT's TCP
    assert srv.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert srv.proxy_required is True
    tls = config.tls
    assert (tls.cert, tls.key) == (str(tmp_path / "fullchain.pem"), str(tmp_path / "privkey.pem"))
    assert not tls.self_signed
    assert tls.server_name == "dns.example.org"
    assert (tls.max_connections, tls.idle_timeout, tls.max_inflight) == (5, 2.5, 3)
    assert (tls.max_streams, tls.ticket_rotation, tls.padding) == (7, 3600.0, False)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('[tls]\ncert = "fullchain.pem"', "tls.key", "tls.cert and tls.key go together"),
        ('[tls]\nkey = "privkey.pem"', "tls.cert", "tls.cert and tls.key go together"),
        ('[tls]\ncert = "none.pem"\nkey = "privkey.pem"', "tls.cert", "none.pem is not a file"),
        ('[tls]\nserver_name = "localhost"', "tls.server_name", "is not a host name"),
        ('[tls]\nserver_name = "a..b"', "tls.server_name", "is not a host name"),
        ('[tls]\nserver_name = "x_y.example"', "tls.server_name", "is not a host name"),
        ("[tls]\nmax_streams = 0", "tls.max_streams", "must be >= 1, got 0"),
        ("[tls]\nidle_timeout = 0", "tls.idle_timeout", "must be a positive number"),
        ('[tls]\nticket_rotation = "soon"', "tls.ticket_rotation", "must be seconds or"),
        ("[tls]\ncertificate = 1", "tls.certificate", "unknown key"),
        ('[server]\nlisten_tls = ["127.0.0.1"]', "server.listen_tls[0]", "a port is required"),
        ('[server]\nlisten_https = ["dns:443"]', "server.listen_https[0]", "is not an IP"),
        ('[server]\ntrusted_proxies = ["lb"]', "server.trusted_proxies[0]", "is not a CIDR"),
        ('[server]\nproxy_required = "yes"', "server.proxy_required", "must be a boolean"),
        (
            '[server]\nlisten = ["127.0.0.1:853"]\nlisten_tls = ["127.0.0.1:853"]',
            "server.listen_tls",
            "127.0.0.1:853 is also in server.listen (tcp)",
        ),
        (
            '[server]\nlisten_tls = ["127.0.0.1:8443"]\nlisten_https = ["127.0.0.1:8443"]',
            "server.listen_https",
            "127.0.0.1:8443 is also in server.listen_tls (tcp)",
        ),
        (
            '[server]\nlisten = ["127.0.0.1:853"]\nlisten_quic = ["127.0.0.1:853"]',
            "server.listen_quic",
            "127.0.0.1:853 is also in server.listen (udp)",
        ),
    ],
)
def test_errors(tmp_path: Path, text: str, key: str, message: str) -> None:
    pem_pair(tmp_path)
    err = error(tmp_path, text)
    assert err.key == key
    assert message in err.message


POLICIES = """
[[lists]]
path = "adult.txt"
category = "adult"
[policies.kids]
block = ["adult"]
client_ids = ["Kid1", "kid-2", "kid1"]
client_id_networks = ["192.0.2.0/24", "2001:db8::/32"]
[policies.guests]
client_ids = ["guest"]
"""


def test_client_ids(tmp_path: Path) -> None:
    (tmp_path / "adult.txt").write_text("adult.example\n")
    policies = {p.name: p for p in load(tmp_path, POLICIES).policy.policies}
    assert policies["kids"].client_ids == ("kid1", "kid-2")  # lower case, each once
    assert policies["kids"].client_id_networks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert policies["guests"].client_ids == ("guest",)
    assert policies["guests"].client_id_networks == ()


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            '[policies.more]\nclient_ids = ["KID1"]',
            "policies.more.client_ids",
            "kid1 is already mapped to policy 'kids'",
        ),
        ('[policies.more]\nclient_ids = ["a.b"]', "policies.more.client_ids[0]", "not a ClientID"),
        ('[policies.more]\nclient_ids = [""]', "policies.more.client_ids[0]", "not a ClientID"),
        (
            '[policies.more]\nclient_ids = ["' + "x" * 64 + '"]',
            "policies.more.client_ids[0]",
            "1 to 63 characters",
        ),
        (
            '[policies.more]\nclient_id_networks = ["10.0.0.0/8"]',
            "policies.more.client_id_networks",
            "binds no ClientID",
        ),
        (
            '[policies.more]\nclient_ids = ["x"]\nclient_id_networks = ["ten"]',
            "policies.more.client_id_networks[0]",
            "is not a CIDR",
        ),
        (
            '[policies.default]\nclient_ids = ["x"]',
            "policies.default.client_ids",
            "the default policy applies to every other client",
        ),
    ],
)
def test_client_id_errors(tmp_path: Path, extra: str, key: str, message: str) -> None:
    (tmp_path / "adult.txt").write_text("adult.example\n")
    err = error(tmp_path, POLICIES + extra)
    assert err.key == key
    assert message in err.message


def flags_config(tmp_path: Path) -> Config:
    text = '[server]\nlisten = ["127.0.0.1:5353"]\n[upstream]\nservers = ["192.0.2.9"]'
    return load_config(
        write(tmp_path, text),
        resolv_conf=str(tmp_path / "none"),
    )


def test_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = pem_pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    config = apply_overrides(
        flags_config(tmp_path),
        listen_tls=["127.0.0.1:8853"],
        listen_https=["127.0.0.1:8443", "127.0.0.1:8443"],
        listen_quic=["[::1]:8853"],
        tls_cert="fullchain.pem",  # relative to the current directory
        tls_key=str(key),
    )
    assert config.server.listen_tls == (Address("127.0.0.1", 8853),)
    assert config.server.listen_https == (Address("127.0.0.1", 8443),)
    assert config.server.listen_quic == (Address("::1", 8853),)
    assert (config.tls.cert, config.tls.key) == (str(cert), str(key))


@pytest.mark.parametrize(
    ("kwargs", "flag", "message"),
    [
        ({"listen_tls": ["853"]}, "--listen-tls", "is not an IP address"),
        ({"listen_https": ["127.0.0.1:0"]}, "--listen-https", "outside 1..65535"),
        ({"listen_tls": ["127.0.0.1:5353"]}, "--listen-tls", "also in server.listen (tcp)"),
        ({"listen_quic": ["127.0.0.1:5353"]}, "--listen-quic", "also in server.listen (udp)"),
        ({"tls_cert": "fullchain.pem"}, "--tls-key", "--tls-cert and --tls-key go together"),
        ({"tls_key": "privkey.pem"}, "--tls-cert", "--tls-cert and --tls-key go together"),
        ({"tls_cert": "x.pem", "tls_key": "privkey.pem"}, "--tls-cert", "x.pem is not a file"),
    ],
)
def test_flag_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], flag: str,
    message: str,
) -> None:
    pem_pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        apply_overrides(flags_config(tmp_path), **kwargs)  # type: ignore[arg-type]
    assert (info.value.path, info.value.key) == (COMMAND_LINE, flag)
    assert message in info.value.message

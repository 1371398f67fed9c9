"""`[upstream]` with encrypted upstreams: the URL forms, bootstrap, ca_file, idle_timeout,
their one-line errors, `--upstream` and `config show`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fdconfig import ConfigError, apply_overrides, load_config
from fdconfig.fields import Address
from fdconfig.show import show
from fdconfig.upstream import DohServer, DotServer


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, resolv_conf=str(tmp_path / "no-resolv.conf"))


def test_the_three_forms_bootstrap_ca_file_and_idle_timeout(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    config = load(
        tmp_path,
        """[upstream]
servers = ["192.0.2.1", "tls://192.0.2.2#dns.example", "tls://[2001:db8::2]:8853#Dns.Example.",
           "https://doh.example/dns-query", "https://192.0.2.3:8443/q"]
bootstrap = ["9.9.9.9", "[2620:fe::fe]:53"]
ca_file = "ca.pem"
idle_timeout = "2m"
""",
    )
    ups = config.upstream
    assert ups.servers == (
        Address("192.0.2.1", 53),
        DotServer(Address("192.0.2.2", 853), "dns.example"),
        DotServer(Address("2001:db8::2", 8853), "dns.example"),
        DohServer("https://doh.example/dns-query", "doh.example", 443),
        DohServer("https://192.0.2.3:8443/q", "192.0.2.3", 8443),
    )
    assert [str(s) for s in ups.servers[1:3]] == [
        "tls://192.0.2.2:853#dns.example",
        "tls://[2001:db8::2]:8853#dns.example",
    ]
    assert ups.servers[4].ip == "192.0.2.3" and ups.servers[3].ip is None  # type: ignore[union-attr]
    assert ups.bootstrap == (Address("9.9.9.9", 53), Address("2620:fe::fe", 53))
    assert ups.ca_file == str(tmp_path / "ca.pem")
    assert ups.idle_timeout == 120.0
    assert ups.encrypted
    assert not load(tmp_path, '[upstream]\nservers = ["192.0.2.1"]\n').upstream.encrypted


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('servers = ["tls://dns.quad9.net"]', "upstream.servers[0]", "not an IP address"),
        ('servers = ["tls://9.9.9.9#"]', "upstream.servers[0]", "empty server name"),
        ('servers = ["quic://9.9.9.9"]', "upstream.servers[0]", "unknown scheme 'quic'"),
        ('servers = ["https://doh.example/q?dns=x"]', "upstream.servers[0]", "nothing more"),
        ('servers = ["https://doh.example:99999/q"]', "upstream.servers[0]", "out of range"),
        (
            'servers = ["https://doh.example/dns-query"]',
            "upstream.servers[0]",
            "'doh.example' is a name: set upstream.bootstrap",
        ),
        ('bootstrap = ["dns.google"]', "upstream.bootstrap[0]", "not an IP address"),
        ('ca_file = "missing.pem"', "upstream.ca_file", "is not a file"),
        ('idle_timeout = "soon"', "upstream.idle_timeout", "duration"),
        ("idle_timeout = 0", "upstream.idle_timeout", "positive"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[upstream]\n{text}\n")
    assert info.value.key == key
    assert message in info.value.message
    assert "\n" not in str(info.value)


def test_the_upstream_flag_takes_the_url_forms(tmp_path: Path) -> None:
    config = load(tmp_path, '[upstream]\nservers = ["192.0.2.1"]\n')
    config = apply_overrides(config, upstream=["tls://192.0.2.9#dns.example"])
    assert config.upstream.servers == (DotServer(Address("192.0.2.9", 853), "dns.example"),)
    with pytest.raises(ConfigError, match="--upstream: 'tls://x': 'x' is not an IP address"):
        apply_overrides(config, upstream=["tls://x"])


def test_config_show_writes_them_back(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """[upstream]
servers = ["tls://192.0.2.2#dns.example", "https://doh.example/dns-query"]
bootstrap = ["9.9.9.9"]
idle_timeout = 45
""",
    )
    shown = tmp_path / "shown.toml"
    shown.write_text(show(config))
    text = shown.read_text()
    assert '"tls://192.0.2.2:853#dns.example",\n    "https://doh.example/dns-query",' in text
    again = load_config(shown, resolv_conf=str(tmp_path / "no-resolv.conf"))
    assert again == dataclasses.replace(config, source=str(shown))

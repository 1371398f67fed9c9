"""`[[forward]]`, `[local]` and the per-policy `rewrite` and `records`: what they load to,
and the one-line errors that name the file, the key and the line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fdconfig import Address, ConfigError, load_config
from fdconfig.show import show
from tests.fdconfig.test_config import load, write

POLICIES = """
[policies.staff]
clients = ["10.1.0.0/16"]
"""


def error(tmp_path: Path, text: str) -> str:
    """The error's text, the file named relative to `tmp_path`."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value).replace(f"{tmp_path}/", "")


def test_forward_rules_load_normalised(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[upstream]
servers = ["192.0.2.53"]
[[forward]]
domains = ["Corp.Test.", "168.192.in-addr.arpa"]
servers = ["10.0.0.10", "10.0.0.11:5353"]
policies = ["staff"]
"""
        + POLICIES,
    )
    (rule,) = config.forward
    assert rule.domains == ("corp.test", "168.192.in-addr.arpa")
    assert rule.servers == (Address("10.0.0.10", 53), Address("10.0.0.11", 5353))
    assert rule.policies == ("staff",)


def test_a_rule_takes_encrypted_servers_as_upstream_does(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[forward]]\ndomains = ["corp.test"]\n'
        'servers = ["tls://10.0.0.10#dc.corp.test", "https://dc.corp.test/dns-query"]\n',
    )
    (rule,) = config.forward
    assert [str(s) for s in rule.servers] == [
        "tls://10.0.0.10:853#dc.corp.test",
        "https://dc.corp.test/dns-query",
    ]


def test_a_root_rule_for_everybody_is_the_default_upstream_set(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[forward]]\ndomains = [".", "lan"]\nservers = ["192.0.2.1"]\n'
        '[[forward]]\ndomains = ["."]\nservers = ["192.0.2.2"]\npolicies = ["staff"]\n' + POLICIES,
    )
    assert config.upstream.servers == (Address("192.0.2.1", 53),)
    assert not config.upstream.from_resolv_conf
    assert [(r.domains, r.policies) for r in config.forward] == [
        (("lan",), ()),
        ((".",), ("staff",)),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[upstream]\nservers = ["192.0.2.1"]\n[[forward]]\ndomains = ["."]\n'
            'servers = ["192.0.2.2"]\n',
            'config.toml: forward[0].domains: "." is the default upstream set: give it here '
            "or in upstream.servers, not both",
        ),
        (
            '[[forward]]\ndomains = ["corp.test"]\nservers = ["10.0.0.1"]\npolicies = ["x"]\n',
            'config.toml: forward[0].policies[0]: no policy is named "x"',
        ),
        (
            '[[forward]]\ndomains = ["a.test"]\nservers = ["10.0.0.1"]\n'
            '[[forward]]\ndomains = ["b.test", "A.test"]\nservers = ["10.0.0.2"]\n',
            'config.toml: forward[1].domains: "a.test" already has a rule (forward[0])',
        ),
        (
            '[[forward]]\ndomains = ["a.test"]\nservers = ["dc.corp.test"]\n',
            "config.toml: forward[0].servers[0]: 'dc.corp.test' is not an IP address",
        ),
        (
            '[[forward]]\ndomains = []\nservers = ["10.0.0.1"]\n',
            "config.toml: forward[0].domains: must hold at least one item",
        ),
        (
            '[[forward]]\ndomains = ["a.test"]\n',
            "config.toml: forward[0].servers: is required",
        ),
    ],
)
def test_forward_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text) == expected


def test_local_records_file_and_hosts_files(tmp_path: Path) -> None:
    (tmp_path / "lan.zone").write_text("$ORIGIN lan.\n$TTL 60\nmail IN A 192.168.1.25\n")
    (tmp_path / "hosts").write_text("192.168.1.20 nas.home nas  # the NAS\n")
    config = load(
        tmp_path,
        """
[local]
records = ["printer.lan 300 IN A 192.168.1.9", "Nas.Lan. CNAME printer.lan"]
records_file = "lan.zone"
hosts_files = ["hosts"]
ttl = 900
nodefault = ["TEST"]
""",
    )
    loc = config.local
    assert [(r.name, r.rtype, r.ttl, r.target) for r in loc.records] == [
        ("printer.lan", 1, 300, ""),
        ("nas.lan", 5, 900, "printer.lan"),
        ("mail.lan", 1, 60, ""),
    ]
    assert loc.records[0].rdata == bytes([192, 168, 1, 9])
    assert loc.hosts_files == (str(tmp_path / "hosts"),)
    assert loc.nodefault == ("test",)
    assert loc.ptr is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[local]\nrecords = ["ok.lan A 192.0.2.1", "bad.lan A 1.2.3"]',
            'config.toml: local.records[1]: "bad.lan A 1.2.3": not a zone-file record',
        ),
        (
            '[local]\nrecords = ["lan NS ns1.lan"]',
            'config.toml: local.records[0]: "lan NS ns1.lan": lan: type NS is not served locally '
            "(A, CNAME, PTR, MX, TXT, AAAA, SRV)",
        ),
        (
            '[local]\nrecords = ["nas.lan CNAME printer.lan", "nas.lan A 192.0.2.1"]',
            "config.toml: local.records: nas.lan has a CNAME and other records",
        ),
        (
            '[local]\nnodefault = ["example.com"]',
            'config.toml: local.nodefault[0]: "example.com" is not a locally served zone',
        ),
        (
            '[local]\nrecords_file = "missing.zone"',
            "config.toml: local.records_file: cannot read",
        ),
        (
            '[policies.staff]\nrecords = ["x.lan A"]',
            'config.toml: policies.staff.records[0]: "x.lan A": not a zone-file record',
        ),
        (
            '[policies.staff]\nrewrite = { "a.lan" = "not a name!" }',
            "config.toml: policies.staff.rewrite.a.lan: ",
        ),
    ],
)
def test_local_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


def test_a_bad_line_of_a_records_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "lan.zone").write_text(
        "$ORIGIN lan.\n; the printers\nprinter IN A 192.168.1.9\nscanner IN A 192.168.1\n"
        "mail IN A 192.168.1.25\n"
    )
    message = error(tmp_path, '[local]\nrecords_file = "lan.zone"')
    assert message.startswith(
        'config.toml: local.records_file: lan.zone: line 4: "scanner IN A 192.168.1": '
        "not a zone-file record"
    )


def test_a_bad_hosts_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n\n192.168.1.300 nas\n")
    message = error(tmp_path, '[local]\nhosts_files = ["hosts"]')
    assert message == (
        'config.toml: local.hosts_files[0]: hosts: line 3: "192.168.1.300" is not an IP address'
    )


def test_policy_rewrite_and_records(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        POLICIES
        + 'rewrite = { "School.Lan" = "intranet.example" }\n'
        + 'records = ["printer.lan A 10.1.0.9"]\n[local]\nttl = 120\n',
    )
    staff = config.policy.policies[0]
    assert staff.rewrite == (("school.lan", "intranet.example"),)
    assert [(r.name, r.ttl, r.rdata) for r in staff.records] == [
        ("printer.lan", 120, bytes([10, 1, 0, 9]))
    ]


def test_show_writes_local_names_back(tmp_path: Path) -> None:
    (tmp_path / "lan.zone").write_text(
        '$ORIGIN lan.\nmail 60 IN A 192.168.1.25\n@ MX 10 mail\ninfo TXT "a b"\n'
        "_sip._tcp SRV 0 5 5060 mail.lan.\nv6 AAAA fd00::1\n"
    )
    (tmp_path / "hosts").write_text("192.168.1.20 nas\n")
    path = write(
        tmp_path,
        '[upstream]\nservers = ["192.0.2.53"]\n'
        '[[forward]]\ndomains = ["corp.test"]\nservers = ["10.0.0.1"]\npolicies = ["staff"]\n'
        '[local]\nrecords = ["nas.lan CNAME mail.lan"]\nrecords_file = "lan.zone"\n'
        'hosts_files = ["hosts"]\nptr = false\nnodefault = ["local"]\n'
        + POLICIES
        + 'rewrite = { "school.lan" = "intranet.example" }\nrecords = ["9.0.1.10.in-addr.arpa'
        ' PTR printer.lan"]\n',
    )
    config = load_config(path, resolv_conf=str(tmp_path / "none"))
    shown = write(tmp_path, show(config), "shown.toml")
    again = load_config(shown, resolv_conf=str(tmp_path / "none"))
    assert again == dataclasses.replace(config, source=str(shown))
    assert len(again.local.records) == 6

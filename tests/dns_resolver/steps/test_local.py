"""Unit tests for dns_resolver.steps.local: which route a name takes (the most specific domain,
a policy's rule before everybody's), what C must hand to Python, rewrites, and the wire
form of local answers (checked with dnspython)."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode

from dns_resolver import wire
from dns_resolver.steps.local import LocalData
from dns_resolver.upstreams.upstream import Forwarder
from fdconfig import Config, load_config

CONFIG = """
[upstream]
servers = ["192.0.2.53"]
[[forward]]
domains = ["in-addr.arpa", "corp.test"]
servers = ["10.0.0.1"]
[[forward]]
domains = ["corp.test"]
servers = ["10.0.0.2"]
policies = ["staff"]
[local]
records = ["printer.lan A 192.168.1.9", "a.lan CNAME b.lan", "b.lan CNAME a.lan",
           "out.lan CNAME www.example.org"]
[policies.staff]
clients = ["10.1.0.0/16"]
rewrite = { "school.lan" = "intranet.example" }
"""


def build(tmp_path: Path, text: str = CONFIG) -> tuple[Config, LocalData]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    config = load_config(path, resolv_conf=str(tmp_path / "none"))
    forwarders = {rule.servers: Forwarder([(str(s.host), s.port) for s in rule.servers])
                  for rule in config.forward}
    default = Forwarder([("192.0.2.53", 53)])
    return config, LocalData(config, default, forwarders)


def servers(route: object) -> list[str]:
    assert isinstance(route, Forwarder), route
    return [u.name for u in route.upstreams]


def parse(body: bytes) -> dns.message.Message:
    return dns.message.from_wire(body)


def query(name: str, qtype: int = wire.TYPE_A) -> wire.Query:
    return wire.parse_query(dns.message.make_query(name, qtype).to_wire())


def test_the_most_specific_domain_decides(tmp_path: Path) -> None:
    _, local = build(tmp_path)
    assert servers(local.route("dc.corp.test", "")) == ["10.0.0.1:53"]
    assert servers(local.route("dc.corp.test", "staff")) == ["10.0.0.2:53"]
    assert local.route("other.test", "staff") == "test"
    # A rule for in-addr.arpa does not reach into a locally served reverse zone.
    assert local.route("5.1.168.192.in-addr.arpa", "") == "168.192.in-addr.arpa"
    assert servers(local.route("8.8.8.8.in-addr.arpa", "")) == ["10.0.0.1:53"]
    assert local.route("www.example.org", "") is local.default
    assert local.route("badcorp.test", "") == "test"  # label boundaries


def test_punt_names_cover_every_name_c_must_not_forward(tmp_path: Path) -> None:
    _, local = build(tmp_path)
    names = local.punt_names("staff")
    assert {"corp.test", "in-addr.arpa", "printer.lan", "school.lan", "local"} <= names
    assert "168.192.in-addr.arpa" in names and "d.f.ip6.arpa" in names
    assert "school.lan" not in local.punt_names("default")
    assert "." not in names


def test_the_rules_c_routes_by_per_policy(tmp_path: Path) -> None:
    _, local = build(tmp_path)
    everybody = local.rules_for("default")
    assert {d: servers(f) for d, f in everybody.items()} == {
        "in-addr.arpa": ["10.0.0.1:53"],
        "corp.test": ["10.0.0.1:53"],
    }
    # At the same domain the policy's own rule wins.
    assert servers(local.rules_for("staff")["corp.test"]) == ["10.0.0.2:53"]
    # Names Python answers whatever a rule says: local records, rewrite sources.
    staff = local.local_names("staff")
    assert {"printer.lan", "a.lan", "b.lan", "out.lan", "school.lan"} <= staff
    assert "9.1.168.192.in-addr.arpa" in staff  # the automatic PTR
    assert "corp.test" not in staff and "test" not in staff  # rules' and served zones
    assert "school.lan" not in local.local_names("default")


def test_rewrite_keeps_the_labels_below_the_source(tmp_path: Path) -> None:
    _, local = build(tmp_path)
    assert local.rewrite("www.school.lan", "staff") == "www.intranet.example"
    assert local.rewrite("school.lan", "staff") == "intranet.example"
    assert local.rewrite("myschool.lan", "staff") is None
    assert local.rewrite("www.school.lan", "default") is None


def test_local_answers_on_the_wire(tmp_path: Path) -> None:
    _, local = build(tmp_path)
    found = local.answer(query("Printer.LAN."), "")
    assert found is not None and not found.target
    message = parse(found.body)
    assert message.flags & dns.flags.AA
    assert [rrset.to_text() for rrset in message.answer] == ["Printer.LAN. 300 IN A 192.168.1.9"]
    # A CNAME loop ends after a bounded chain.
    looped = local.answer(query("a.lan."), "")
    assert looped is not None and len(parse(looped.body).answer) > 1
    outward = local.answer(query("out.lan."), "")
    assert outward is not None and outward.target == "www.example.org"
    assert local.answer(query("www.example.org."), "") is None
    nx = parse(local.nxdomain(query("x.local."), "local"))
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert [rrset.name.to_text() for rrset in nx.authority] == ["local."]


def test_ptr_off(tmp_path: Path) -> None:
    _, local = build(tmp_path, CONFIG.replace("[local]\n", "[local]\nptr = false\n"))
    assert local.answer(query("9.1.168.192.in-addr.arpa.", 12), "") is None
    _, with_ptr = build(tmp_path)
    found = with_ptr.answer(query("9.1.168.192.in-addr.arpa.", 12), "")
    assert found is not None
    assert parse(found.body).answer[0].to_text().endswith("PTR printer.lan.")

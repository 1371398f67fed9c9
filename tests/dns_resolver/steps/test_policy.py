"""Policies: client mapping and its precedence, per-policy verdicts, EDE texts, own
entries, schedules at their boundary (injected clock) and the fast-path view."""

from __future__ import annotations

import base64
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from dns_resolver import edns
from dns_resolver.resolver import Pending, Resolver
from dns_resolver.steps import policy as policy_mod
from dns_resolver.steps.policy import OPTION_CPE_ID, OPTION_ECS, OPTION_MAC, parse_ecs, parse_mac
from dns_resolver.wire import Edns
from fdconfig import ConfigError
from tests.dns_resolver.policy_helpers import Clock, ask, make_config, make_resolver, paris

POLICIES = """
[clients]
trusted_forwarders = ["127.0.0.53/32"]

[policies.child]
clients = ["127.0.0.0/24"]
macs = ["02:00:00:00:00:01"]
cpe_ids = ["kids-tablet"]
block = ["adult", "games"]
allow_domains = ["ok.porn.example"]
block_domains = ["homework-cheats.example"]
block_unsafe_search = true
timezone = "Europe/Paris"

[[policies.child.schedule]]
name = "bedtime"
days = ["everyday"]
start = "21:00"
end = "07:00"
block = ["social"]

[policies.teen]
clients = ["127.0.0.2/32", "10.1.0.0/16"]
block = ["adult"]

[policies.default]
block = ["malware-phishing"]
"""


@pytest.fixture
def clock() -> Clock:
    return Clock(paris(23, 12))  # a Monday, noon


@pytest.fixture
def resolver(tmp_path: Path, clock: Clock) -> Resolver:
    return make_resolver(make_config(tmp_path, POLICIES), clock)


def answer(out: bytes | Pending) -> tuple[str, list[tuple[int, str]]]:
    assert isinstance(out, bytes), f"expected an answer, got {out!r}"
    return dns.rcode.to_text(dns.message.from_wire(out).rcode()), edns.ede_codes(out)


def ecs_option(cidr: str) -> tuple[int, bytes]:
    import ipaddress

    net = ipaddress.ip_network(cidr)
    family = 1 if net.version == 4 else 2
    size = (net.prefixlen + 7) // 8
    data = family.to_bytes(2, "big") + bytes([net.prefixlen, 0]) + net.network_address.packed[:size]
    return OPTION_ECS, data


# -- client mapping -----------------------------------------------------------------------


def test_most_specific_network_wins(resolver: Resolver) -> None:
    table = resolver.policies
    assert table.select("127.0.0.1").policy.name == "child"
    assert table.select("127.0.0.2").policy.name == "teen"  # /32 beats /24
    assert table.select("10.1.2.3").policy.name == "teen"
    assert table.select("192.168.1.1").policy.name == "default"
    assert table.select("::1").policy.name == "default"


def test_ipv4_clients_of_a_dual_stack_listener_are_ipv4(resolver: Resolver) -> None:
    """A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d; C maps it to the IPv4
    address, so Python's networks and trusted forwarders must too."""
    table = resolver.policies
    assert table.select("::ffff:127.0.0.2").policy.name == "teen"
    assert table.select("::ffff:10.1.2.3").policy.name == "teen"
    assert table.select("::ffff:192.168.1.1").policy.name == "default"
    opt = Edns(1232, options=(ecs_option("10.1.7.0/24"),))
    trusted = table.select("::ffff:127.0.0.53", opt)
    assert (trusted.policy.name, trusted.via) == ("teen", "ecs")


def test_ecs_only_from_trusted_forwarders(resolver: Resolver) -> None:
    table = resolver.policies
    opt = Edns(1232, options=(ecs_option("10.1.7.0/24"),))
    trusted = table.select("127.0.0.53", opt)
    assert (trusted.policy.name, trusted.via, trusted.client) == ("teen", "ecs", "ecs:10.1.7.0/24")
    # The same option from an untrusted client is ignored: its own address decides.
    assert table.select("127.0.0.9", opt).policy.name == "child"
    assert table.select("192.168.0.9", opt).policy.name == "default"
    # An ECS network no policy covers falls back to the forwarder's own address.
    other = Edns(1232, options=(ecs_option("172.16.0.0/24"),))
    assert table.select("127.0.0.53", other).policy.name == "child"


def test_client_id_beats_ecs_and_address(resolver: Resolver) -> None:
    table = resolver.policies
    mac = bytes.fromhex("020000000001")
    for encoded in (mac, base64.b64encode(mac), b"02:00:00:00:00:01"):
        opt = Edns(1232, options=(ecs_option("10.1.7.0/24"), (OPTION_MAC, encoded)))
        sel = table.select("127.0.0.53", opt)
        assert (sel.policy.name, sel.via, sel.client) == (
            "child",
            "client-id",
            "mac:02:00:00:00:00:01",
        )
    cpe = Edns(1232, options=((OPTION_CPE_ID, b"kids-tablet"),))
    assert table.select("127.0.0.53", cpe).policy.name == "child"
    # Untrusted: ignored.
    assert table.select("192.168.0.9", cpe).policy.name == "default"


def test_option_parsers_refuse_garbage() -> None:
    assert parse_ecs(b"\x00\x01\x18") is None
    assert parse_ecs(b"\x00\x01\x21\x00" + bytes(5)) is None  # /33 for IPv4
    assert parse_ecs(b"\x00\x03\x08\x00\x0a") is None  # unknown family
    assert str(parse_ecs(b"\x00\x02\x30\x00" + bytes(6))) == "::/48"
    assert parse_mac(b"\x01\x02") is None
    assert parse_mac(b"not-base64") is None


# -- verdicts -----------------------------------------------------------------------------


def test_verdict_honours_the_policy_and_names_it(resolver: Resolver) -> None:
    assert answer(ask(resolver, "porn.example", "127.0.0.1")) == (
        "NXDOMAIN",
        [(17, "blocked: category=adult list=adult rule=porn.example policy=child")],
    )
    assert answer(ask(resolver, "game.example", "127.0.0.1"))[0] == "NXDOMAIN"
    assert isinstance(ask(resolver, "game.example", "127.0.0.2"), Pending)  # teen: games ok
    assert isinstance(ask(resolver, "porn.example", "192.168.1.1"), Pending)  # default
    # Security blocks say EDE 15 (Blocked), policy choices 17 (Filtered).
    assert answer(ask(resolver, "mal.example", "192.168.1.1"))[1] == [
        (15, "blocked: category=malware-phishing list=mal rule=mal.example policy=default")
    ]
    # The cache key carries the policy and its mask.
    pending = ask(resolver, "porn.example", "192.168.1.1")
    assert isinstance(pending, Pending) and pending.key[-2:] == (
        resolver.policies.by_name["default"].index,
        resolver.policies.by_name["default"].mask,
    )


def test_own_entries_and_unsafe_engines(resolver: Resolver) -> None:
    out = ask(resolver, "ok.porn.example", "127.0.0.1")
    assert isinstance(out, Pending) and out.explicit_allow
    assert answer(ask(resolver, "www.homework-cheats.example", "127.0.0.1")) == (
        "NXDOMAIN",
        [
            (
                17,
                "blocked: category=policy list=policy:child rule=homework-cheats.example "
                "policy=child",
            )
        ],
    )
    assert answer(ask(resolver, "search.yahoo.com", "127.0.0.1"))[1][0][1].startswith(
        "blocked: category=unsafe-search"
    )
    assert isinstance(ask(resolver, "search.yahoo.com", "127.0.0.2"), Pending)


def test_bypass_prevention_on_for_child_policies(resolver: Resolver) -> None:
    for name in ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"):
        rcode, ede = answer(ask(resolver, name, "127.0.0.1"))
        assert rcode == "NXDOMAIN" and ede[0][0] == 17 and "policy=child" in ede[0][1]
    msg = dns.message.from_wire(ask(resolver, "_dns.resolver.arpa", "127.0.0.1", "SVCB"))  # type: ignore[arg-type]
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert answer(ask(resolver, "vpn.example", "127.0.0.1"))[0] == "NXDOMAIN"  # filter-bypass
    # "teen" blocks adult, so it is a child policy too; "default" is not.
    assert answer(ask(resolver, "use-application-dns.net", "127.0.0.2"))[0] == "NXDOMAIN"
    assert isinstance(ask(resolver, "use-application-dns.net", "192.168.1.1"), Pending)


# -- schedules ----------------------------------------------------------------------------


def test_schedule_takes_effect_at_the_boundary_without_reload(
    resolver: Resolver, clock: Clock
) -> None:
    table = resolver.policies
    views = []
    table.subscribe(views.append)
    assert isinstance(ask(resolver, "friends.example", "127.0.0.1"), Pending)
    assert table.valid_until == paris(23, 21)
    version = table.version
    clock.now = paris(23, 20, 59)
    assert isinstance(ask(resolver, "friends.example", "127.0.0.1"), Pending)
    clock.now = paris(23, 21, 0)
    rcode, ede = answer(ask(resolver, "friends.example", "127.0.0.1"))
    assert rcode == "NXDOMAIN"
    assert ede[0][1].endswith("policy=child schedule=bedtime")
    assert table.version == version + 1 and views and views[-1].version == table.version
    clock.now = paris(24, 7, 0)  # Tuesday morning: the window has ended
    assert isinstance(ask(resolver, "friends.example", "127.0.0.1"), Pending)


def test_fast_view(resolver: Resolver, clock: Clock) -> None:
    table = resolver.policies
    view = table.fast_view()
    cats = view.categories
    child = view.policies[table.by_name["child"].index]
    assert child.mask == sum(1 << cats.index(c) for c in ("adult", "games", "filter-bypass"))
    assert "use-application-dns.net" in child.punt_names
    assert "homework-cheats.example" in child.punt_names
    assert view.networks[0][2] == 32 and view.networks[0][3] == table.by_name["teen"].index
    assert view.networks[0][:2] == (4, bytes([127, 0, 0, 2]))
    assert view.default_index == table.by_name["default"].index
    assert view.trusted_forwarders == [(4, bytes([127, 0, 0, 53]), 32)]
    assert view.punt_options == (8, 65001, 65074)
    assert view.valid_until == paris(23, 21)
    assert table.fast_view() is view  # unchanged: the same object
    clock.now = paris(23, 21, 30)
    later = table.fast_view()
    assert later.version == view.version + 1
    assert later.policies[table.by_name["child"].index].mask & (1 << cats.index("social"))


def test_no_policies_section_keeps_the_old_path(tmp_path: Path) -> None:
    config = make_config(tmp_path, "")
    resolver = make_resolver(config)
    assert resolver.policies is None
    assert answer(ask(resolver, "porn.example"))[1] == [
        (15, "blocked: category=adult list=adult rule=porn.example")
    ]


def test_implicit_default_policy_blocks_every_list(tmp_path: Path) -> None:
    resolver = make_resolver(
        make_config(tmp_path, '[policies.kids]\nclients = ["127.0.0.2/32"]\nblock = ["games"]\n')
    )
    assert answer(ask(resolver, "porn.example", "127.0.0.1"))[0] == "NXDOMAIN"
    assert isinstance(ask(resolver, "porn.example", "127.0.0.2"), Pending)


def test_named_list_gets_its_own_category(tmp_path: Path) -> None:
    (tmp_path / "extra.txt").write_text("extra.example\n", encoding="utf-8")
    config = make_config(
        tmp_path,
        '[[lists]]\npath = "extra.txt"\nname = "extra"\n\n'
        '[policies.kids]\nclients = ["127.0.0.2/32"]\nlists = ["extra"]\n'
        "[policies.default]\n",
    )
    resolver = make_resolver(config)
    assert "extra" in resolver.matcher.categories
    assert answer(ask(resolver, "extra.example", "127.0.0.2"))[0] == "NXDOMAIN"
    assert isinstance(ask(resolver, "extra.example", "127.0.0.1"), Pending)


# -- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[policies.kids]\nblock = ["porn"]\n', 'policies.kids.block[0]: unknown category "porn"'),
        ('[policies.kids]\nclients = ["127.0.0.300"]\n', "policies.kids.clients[0]: "),
        ('[policies.kids]\nmacs = ["02:00"]\n', "policies.kids.macs[0]: "),
        (
            '[policies.kids]\nlists = ["nope"]\n',
            'policies.kids.lists[0]: no [[lists]] entry is named "nope"',
        ),
        ('[policies.kids]\nyoutube = "on"\n', "policies.kids.youtube: must be"),
        ('[policies.kids]\ntimezone = "Mars/Base"\n', "policies.kids.timezone: unknown time zone"),
        ('[policies.kids]\nblock_mode = "ip"\n', "policies.kids.block_mode: unknown key"),
        ('[policies.kids]\nmode = "ip"\n', "policies.kids.mode: "),
        ('[policies.default]\nclients = ["10.0.0.0/8"]\n', "policies.default.clients: "),
        ('[policies."Kids!"]\n', "policies.Kids!: a policy name may hold only"),
        (
            '[[policies.kids.schedule]]\nstart = "08:00"\nend = "25:00"\nblock = ["games"]\n',
            "policies.kids.schedule[0].end: ",
        ),
        (
            '[[policies.kids.schedule]]\nstart = "08:00"\nend = "09:00"\ndays = ["someday"]\n'
            'block = ["games"]\n',
            "policies.kids.schedule[0].days[0]: ",
        ),
        (
            '[[policies.kids.schedule]]\nstart = "08:00"\nend = "09:00"\n',
            "policies.kids.schedule[0].block: a window must block or allow",
        ),
        (
            '[[policies.kids.allowance]]\ncategory = "games"\nminutes = 0\n',
            "policies.kids.allowance[0].minutes: ",
        ),
        (
            '[policies.a]\nclients = ["10.0.0.0/8"]\n[policies.b]\nclients = ["10.0.0.0/8"]\n',
            "policies.b.clients: 10.0.0.0/8 is already mapped to policy 'a'",
        ),
        ('[clients]\ntrusted_forwarders = ["x"]\n', "clients.trusted_forwarders[0]: "),
        ('[blockpage]\nreview_url = "ftp://x"\n', "blockpage.review_url: "),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, toml)
    assert str(err.value).startswith(str(tmp_path / "policy.toml"))
    assert message in str(err.value)


def test_module_exports() -> None:
    assert set(policy_mod.__all__) <= set(dir(policy_mod))


def test_list_reload_recomputes_the_masks(tmp_path: Path, resolver: Resolver) -> None:
    from dns_resolver.app import build_matcher

    # A reload with a new list (and a new category): the masks are rebuilt for it.
    (tmp_path / "new.txt").write_text("new.example\n", encoding="utf-8")
    config = make_config(
        tmp_path, '[[lists]]\npath = "new.txt"\ncategory = "zzz-new"\n\n' + POLICIES
    )
    version = resolver.policies.version
    resolver.replace_matcher(build_matcher(config))
    assert resolver.policies.version > version
    assert answer(ask(resolver, "porn.example", "127.0.0.1"))[0] == "NXDOMAIN"
    assert isinstance(ask(resolver, "new.example", "127.0.0.1"), Pending)


def test_block_mode_flag_reaches_policies_without_their_own_mode(tmp_path: Path) -> None:
    from fdconfig import apply_overrides

    config = apply_overrides(make_config(tmp_path, POLICIES), block_mode="null")
    resolver = make_resolver(config)
    msg = dns.message.from_wire(ask(resolver, "porn.example", "127.0.0.1"))  # type: ignore[arg-type]
    assert msg.answer[0][0].to_text() == "0.0.0.0"


# -- the console's switches: pause and block now ------------------------------------------


def test_pause_and_block_now_end_by_themselves(resolver: Resolver, clock: Clock) -> None:
    table = resolver.policies
    assert table is not None
    assert answer(ask(resolver, "porn.example", "127.0.0.9"))[0] == "NXDOMAIN"
    table.pause("child", clock.now + 60)
    assert isinstance(ask(resolver, "porn.example", "127.0.0.9"), Pending)  # filtering off
    assert table.valid_until <= clock.now + 60  # the next refresh is at the pause's end
    clock.now += 61
    table.refresh()
    assert answer(ask(resolver, "porn.example", "127.0.0.9"))[0] == "NXDOMAIN"

    # Block now: social for the teen until a time, then as configured again.
    assert isinstance(ask(resolver, "friends.example", "127.0.0.2"), Pending)
    table.block_now("teen", "social", clock.now + 30)
    assert answer(ask(resolver, "friends.example", "127.0.0.2"))[0] == "NXDOMAIN"
    assert table.by_name["teen"].notes["social"] == "block-now"
    clock.now += 31
    table.refresh()
    assert isinstance(ask(resolver, "friends.example", "127.0.0.2"), Pending)
    with pytest.raises(ValueError, match="no loaded list has the category"):
        table.block_now("teen", "weather", clock.now + 30)

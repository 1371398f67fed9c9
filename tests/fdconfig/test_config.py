"""The TOML config: every validation error names the file and the key; defaults; overrides."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fdconfig import (
    COMMAND_LINE,
    Address,
    Config,
    ConfigError,
    apply_overrides,
    default_config,
    load_bundled_lists,
    load_config,
    parse_address,
    read_resolv_conf,
    require_upstreams,
)
from filtercore.verdict import Action


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# generated\n"
        "search example.net\n"
        "nameserver 127.0.0.1\n"
        "nameserver 192.0.2.53 ; trailing comment\n"
        "nameserver not-an-ip\n"
        "nameserver 2001:db8::53\n"
        "options edns0\n"
    )
    return path


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, resolv: Path | None = None) -> Config:
    path = write(tmp_path, text)
    if resolv is None:
        return load_config(path, resolv_conf=str(tmp_path / "no-resolv.conf"))
    return load_config(path, resolv_conf=str(resolv))


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    err = info.value
    assert err.path == str(tmp_path / "config.toml")
    assert str(err).startswith(f"{err.path}: {err.key}: ")
    return err


def test_the_documented_error_message(tmp_path: Path) -> None:
    err = error(tmp_path, '[upstream]\nstrategy = "fast"\n')
    assert err.key == "upstream.strategy"
    assert str(err) == (
        f'{tmp_path / "config.toml"}: upstream.strategy: must be "failover" or "parallel", '
        'got "fast"'
    )


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("bogus = 1\n", "bogus", "unknown key"),
        ("[servr]\n", "servr", "unknown key"),
        ("[server]\nlisen = []\n", "server.lisen", "unknown key"),
        ("[cache]\nmax_entries = 10\nttl = 3\n", "cache.ttl", "unknown key"),
        ('[[lists]]\npath = "block.txt"\ncolour = "red"\n', "lists[0].colour", "unknown key"),
        ("server = 3\n", "server", "must be a table"),
        ('[server]\nlisten = "127.0.0.1:53"\n', "server.listen", "must be an array"),
        ("[server]\nlisten = [53]\n", "server.listen[0]", "must be a string"),
        ('[server]\nlisten = ["localhost:53"]\n', "server.listen[0]", "not an IP address"),
        ('[server]\nlisten = ["127.0.0.1:99999"]\n', "server.listen[0]", "outside 1..65535"),
        ('[server]\nlisten = ["127.0.0.1"]\n', "server.listen[0]", "a port is required"),
        ('[server]\nlisten = ["[::1:53"]\n', "server.listen[0]", "missing ']'"),
        ("[server]\nlisten = []\n", "server.listen", "at least one"),
        ("[server]\nudp_payload_size = 100\n", "server.udp_payload_size", "between 512"),
        ('[server]\ntcp_idle_timeout = "10"\n', "server.tcp_idle_timeout", "must be a number"),
        ("[server]\ntcp_idle_timeout = -1\n", "server.tcp_idle_timeout", "positive"),
        ('[upstream]\nservers = ["dns.google"]\n', "upstream.servers[0]", "not an IP address"),
        ("[upstream]\ntimeout = 0\n", "upstream.timeout", "positive"),
        ("[upstream]\nmax_failures = 0\n", "upstream.max_failures", ">= 1"),
        ("[upstream]\nmax_failures = 1.5\n", "upstream.max_failures", "must be an integer"),
        ('[cache]\nenabled = "yes"\n', "cache.enabled", "must be a boolean"),
        ("[cache]\nmax_entries = true\n", "cache.max_entries", "got a boolean"),
        ("[cache]\nmax_entries = 0\n", "cache.max_entries", ">= 1"),
        ("[cache]\nmin_ttl = -5\n", "cache.min_ttl", ">= 0"),
        ("[cache]\nmin_ttl = 100\nmax_ttl = 10\n", "cache.min_ttl", "must not exceed"),
        ("[cache]\nprefetch_threshold = 2\n", "cache.prefetch_threshold", "at most 1.0"),
        ('[blocking]\nmode = "drop"\n', "blocking.mode", '"nxdomain", "nodata", "null" or "ip"'),
        ('[blocking]\nmode = "ip"\n', "blocking.mode", "needs blocking.ipv4"),
        ('[blocking]\nmode = "ip"\nipv4 = "0.0.0.0"\n', "blocking.mode", "needs blocking.ipv4"),
        ('[blocking]\nipv4 = "::1"\n', "blocking.ipv4", "not an IPv4 address"),
        ('[blocking]\nipv6 = "10.0.0.1"\n', "blocking.ipv6", "not an IPv6 address"),
        ('[blocking]\nipv4 = "block.page"\n', "blocking.ipv4", "not an IPv4 address"),
        ("[blocking]\nttl = -1\n", "blocking.ttl", "between 0"),
        ('[access]\nallow = ["10.0.0.0/33"]\n', "access.allow[0]", "not a CIDR"),
        ('[access]\ndeny = ["127.0.0.2", "nonsense"]\n', "access.deny[1]", "not a CIDR"),
        ('[metrics]\nlisten = "127.0.0.1"\n', "metrics.listen", "a port is required"),
        ('[querylog]\nanonymize = "md5"\n', "querylog.anonymize", '"truncate", "hash" or "none"'),
        ("[querylog]\nmax_bytes = 10\n", "querylog.max_bytes", ">= 4096"),
        ('[querylog]\npath = ""\n', "querylog.path", "must not be empty"),
        ('[logging]\nlevel = "verbose"\n', "logging.level", '"debug", "info"'),
        ('[logging]\nformat = "xml"\n', "logging.format", '"text" or "json"'),
        ('lists = "x"\n', "lists", "array of tables"),
        ('[[lists]]\nname = "x"\n', "lists[0].path", "is required"),
        ('[[lists]]\npath = "missing.txt"\n', "lists[0].path", "no such file or folder"),
        ('[[lists]]\npath = "block.txt"\naction = "drop"\n', "lists[0].action", '"block" or'),
        ('[[lists]]\npath = "block.txt"\ncategory = 3\n', "lists[0].category", "a string"),
        (
            '[[lists]]\npath = "block.txt"\nformat = "csv"\n',
            "lists[0].format",
            'unknown format "csv"',
        ),
    ],
)
def test_validation_errors_name_file_and_key(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    (tmp_path / "block.txt").write_text("example.com\n")
    err = error(tmp_path, text)
    assert err.key == key
    assert fragment in err.message


def test_the_second_list_is_named_by_index(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a.example\n")
    err = error(tmp_path, '[[lists]]\npath = "a.txt"\n[[lists]]\npath = "b.txt"\n')
    assert err.key == "lists[1].path"
    assert str(tmp_path / "b.txt") in err.message


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert info.value.path == str(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_a_full_config_loads_into_parsed_values(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "adult.txt").write_text("adult.example\n")
    (tmp_path / "allow.txt").write_text("school.example\n")
    config = load(
        tmp_path,
        """
[server]
listen = ["127.0.0.1:5300", "[::1]:5300", "127.0.0.1:5300"]
udp_payload_size = 1400
tcp_idle_timeout = 5
data_dir = "state"

[upstream]
servers = ["192.0.2.1", "[2001:db8::1]:5353", "192.0.2.2:53"]
strategy = "parallel"
timeout = 1

[cache]
max_entries = 500
serve_stale = true

[blocking]
mode = "ip"
ipv4 = "192.0.2.80"
ttl = 60
filtered_categories = ["games"]

[access]
allow = ["10.0.0.0/8", "::1"]
deny = ["10.1.2.0/24"]

[metrics]
listen = ""

[querylog]
enabled = true
path = "q.log"
anonymize = "hash"

[logging]
level = "debug"
format = "json"

[[lists]]
path = "lists/adult.txt"
category = "adult"
name = "mine"

[[lists]]
path = "allow.txt"
action = "allow"
""",
    )
    assert config.server.listen == (Address("127.0.0.1", 5300), Address("::1", 5300))
    assert str(config.server.listen[1]) == "[::1]:5300"
    assert config.server.udp_payload_size == 1400
    assert config.server.tcp_idle_timeout == 5.0
    assert config.upstream.servers == (
        Address("192.0.2.1", 53),
        Address("2001:db8::1", 5353),
        Address("192.0.2.2", 53),
    )
    assert not config.upstream.from_resolv_conf
    assert config.upstream.strategy == "parallel"
    assert config.upstream.timeout == 1.0
    assert config.cache.max_entries == 500 and config.cache.serve_stale
    assert config.blocking.mode == "ip" and config.blocking.ipv4 == "192.0.2.80"
    assert config.blocking.ipv6 == ""
    assert config.blocking.filtered_categories == ("games",)
    assert config.access.allow == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.access.deny == (ipaddress.ip_network("10.1.2.0/24"),)
    assert config.metrics.listen is None and not config.metrics.enabled
    # The query log lives under data_dir, which is relative to the config file's folder.
    assert config.querylog.path == str(tmp_path / "state" / "q.log")
    assert config.querylog.enabled and config.querylog.anonymize == "hash"
    assert config.logging.level == "debug" and config.logging.format == "json"
    specs = config.list_specs()
    assert [s.path for s in specs] == [
        str(tmp_path / "lists" / "adult.txt"),
        str(tmp_path / "allow.txt"),
    ]
    assert specs[0].name == "mine" and specs[0].category == "adult"
    assert specs[0].action is Action.BLOCK
    assert specs[1].action is Action.ALLOW and specs[1].category is None
    assert config.source == str(tmp_path / "config.toml")


def test_an_empty_config_has_the_documented_defaults(tmp_path: Path, resolv: Path) -> None:
    config = load(tmp_path, "", resolv)
    assert config.server.listen == (Address("127.0.0.1", 5353),)
    assert config.server.udp_payload_size == 1232
    assert config.upstream.strategy == "failover"
    assert config.upstream.from_resolv_conf
    assert config.cache.enabled and config.cache.max_entries == 100_000
    assert config.blocking.mode == "nxdomain" and config.blocking.ttl == 300
    assert config.metrics.listen == Address("127.0.0.1", 9153)
    assert not config.querylog.enabled
    assert config.lists == ()  # a config file without [[lists]] filters nothing
    allow = config.access.allow
    assert ipaddress.ip_network("127.0.0.0/8") in allow
    assert ipaddress.ip_network("192.168.0.0/16") in allow
    assert not any(ipaddress.ip_address("8.8.8.8") in net for net in allow)


def test_read_resolv_conf(resolv: Path, tmp_path: Path) -> None:
    assert read_resolv_conf(resolv) == ["127.0.0.1", "192.0.2.53", "2001:db8::53"]
    assert read_resolv_conf(tmp_path / "missing") == []


def test_upstreams_from_resolv_conf_skip_our_own_listen_address(
    tmp_path: Path, resolv: Path
) -> None:
    config = load(tmp_path, '[server]\nlisten = ["127.0.0.1:53"]\n', resolv)
    assert config.upstream.servers == (Address("192.0.2.53", 53), Address("2001:db8::53", 53))
    # On another port 127.0.0.1:53 is some other resolver, so it is kept.
    config = load(tmp_path, "", resolv)
    assert config.upstream.servers[0] == Address("127.0.0.1", 53)
    # A wildcard listener on port 53 also answers on loopback.
    config = load(tmp_path, '[server]\nlisten = ["0.0.0.0:53"]\n', resolv)
    assert Address("127.0.0.1", 53) not in config.upstream.servers


def test_an_upstream_that_is_ourselves_is_an_error(tmp_path: Path) -> None:
    err = error(
        tmp_path,
        '[server]\nlisten = ["127.0.0.1:5300"]\n[upstream]\nservers = ["127.0.0.1:5300"]\n',
    )
    assert err.key == "upstream.servers[0]"


def test_default_config(tmp_path: Path, resolv: Path) -> None:
    lists_dir = tmp_path / "bundled"
    (lists_dir / "ut1" / "adult").mkdir(parents=True)
    (lists_dir / "ut1" / "adult" / "domains").write_text("adult.example\n")
    (lists_dir / "lists.toml").write_text(
        '[[lists]]\nname = "ut1"\npath = "ut1"\nformat = "auto"\n'
    )
    config = default_config(resolv_conf=str(resolv), lists_file=lists_dir / "lists.toml")
    assert config.source is None
    assert config.server.listen == (Address("127.0.0.1", 5353),)
    assert config.metrics.listen == Address("127.0.0.1", 9153)
    assert config.upstream.servers == (
        Address("127.0.0.1", 53),
        Address("192.0.2.53", 53),
        Address("2001:db8::53", 53),
    )
    assert [(s.name, s.path) for s in config.list_specs()] == [("ut1", str(lists_dir / "ut1"))]


def test_bundled_lists_file_errors_name_that_file(tmp_path: Path) -> None:
    lists_file = tmp_path / "lists.toml"
    lists_file.write_text('[[lists]]\npath = "gone"\n')
    with pytest.raises(ConfigError) as info:
        load_bundled_lists(lists_file)
    assert info.value.path == str(lists_file) and info.value.key == "lists[0].path"


def test_the_repository_bundled_lists_load() -> None:
    """The shipped lists/default/lists.toml is valid and names existing lists."""
    specs = [entry.to_spec() for entry in load_bundled_lists()]
    assert specs
    assert all(Path(s.path).exists() for s in specs)


def test_overrides_replace_config_values(tmp_path: Path, resolv: Path) -> None:
    (tmp_path / "extra.txt").write_text("extra.example\n")
    config = load(tmp_path, '[[lists]]\npath = "extra.txt"\n', resolv)
    new = apply_overrides(
        config,
        listen=["127.0.0.1:53", "[::1]:53"],
        upstream=["192.0.2.9", "[2001:db8::9]:5300"],
        lists=[f"{tmp_path / 'extra.txt'}:gambling"],
        block_mode="null",
        metrics_listen="127.0.0.1:9999",
    )
    assert new.server.listen == (Address("127.0.0.1", 53), Address("::1", 53))
    assert new.upstream.servers == (Address("192.0.2.9", 53), Address("2001:db8::9", 5300))
    assert [(s.path, s.category) for s in new.list_specs()] == [
        (str(tmp_path / "extra.txt"), "gambling")
    ]
    assert new.blocking.mode == "null"
    assert new.metrics.listen == Address("127.0.0.1", 9999)
    assert apply_overrides(config, metrics_listen="").metrics.listen is None
    # No flags: nothing changes.
    assert apply_overrides(config) == config


def test_listen_override_recomputes_resolv_conf_upstreams(tmp_path: Path, resolv: Path) -> None:
    config = load(tmp_path, "", resolv)
    assert Address("127.0.0.1", 53) in config.upstream.servers
    moved = apply_overrides(config, listen=["127.0.0.1:53"])
    assert Address("127.0.0.1", 53) not in moved.upstream.servers


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"listen": ["127.0.0.1:x"]}, "--listen", "not a number"),
        ({"upstream": ["resolver.example"]}, "--upstream", "not an IP address"),
        ({"listen": ["127.0.0.1:5300"], "upstream": ["127.0.0.1:5300"]}, "--upstream", "own"),
        ({"lists": ["/nonexistent/list.txt"]}, "--list", "no such file"),
        ({"lists": [":adult"]}, "--list", "path is empty"),
        ({"lists": [f"{__file__}:adult:csv"]}, "--list", 'unknown format "csv"'),
        ({"block_mode": "drop"}, "--block-mode", 'got "drop"'),
        ({"block_mode": "ip"}, "--block-mode", "needs blocking.ipv4"),
        ({"metrics_listen": "9153"}, "--metrics-listen", "'9153' is not an IP address"),
    ],
)
def test_override_errors_name_the_flag(
    tmp_path: Path, kwargs: dict[str, object], key: str, fragment: str
) -> None:
    config = load(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, **kwargs)  # type: ignore[arg-type]
    assert info.value.path == COMMAND_LINE
    assert info.value.key == key
    assert fragment in info.value.message
    assert str(info.value).startswith(f"command line: {key}: ")


def test_require_upstreams(tmp_path: Path) -> None:
    config = load(tmp_path, "")  # resolv.conf missing: no upstream
    assert config.upstream.servers == ()
    with pytest.raises(ConfigError, match="no upstream") as info:
        require_upstreams(config)
    assert info.value.key == "upstream.servers"
    require_upstreams(apply_overrides(config, upstream=["192.0.2.1"]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", Address("127.0.0.1", 53)),
        ("[::1]:5353", Address("::1", 5353)),
        ("2001:DB8::1", Address("2001:db8::1", 53)),
        ("[2001:db8::1]", Address("2001:db8::1", 53)),
        ("192.0.2.1", Address("192.0.2.1", 53)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, default_port=53) == expected


# --- lists given by URL (listsync) --------------------------------------------------------


def test_a_list_given_by_url_is_cached_under_data_dir(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[server]\ndata_dir = "state"\n'
        '[[lists]]\npath = "https://lists.example/ut1/blacklists.tar.gz"\nrefresh = "6h"\n'
        '[[lists]]\nurl = "http://127.0.0.1:8080/hosts"\nname = "sb"\nmax_shrink = 0.2\n'
        "max_bytes = 4096\ntimeout = 20\n",
    )
    ut1, sb = config.lists
    assert ut1.url == "https://lists.example/ut1/blacklists.tar.gz" and ut1.name == "blacklists"
    assert ut1.path == str(tmp_path / "state" / "sources" / "blacklists" / "blacklists.tar.gz")
    assert ut1.refresh == 6 * 3600 and ut1.max_shrink == 0.5 and ut1.timeout == 300.0
    assert sb.path == str(tmp_path / "state" / "sources" / "sb" / "hosts")
    assert (sb.refresh, sb.max_shrink, sb.max_bytes, sb.timeout) == (86400.0, 0.2, 4096, 20.0)
    assert config.list_specs()[1].path == sb.path  # the compiler reads the cached copy


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('[[lists]]\nurl = "ftp://x.example/l"\n', "lists[0].url", "not an http:// or https://"),
        ('[[lists]]\nurl = "http:///l"\n', "lists[0].url", "with a host"),
        (
            '[[lists]]\nurl = "http://x.example/l"\npath = "block.txt"\n',
            "lists[0].path",
            "has no path",
        ),
        (
            '[[lists]]\nurl = "http://x.example/l"\npath = "http://y.example/l"\n',
            "lists[0].url",
            "not both",
        ),
        ('[[lists]]\nurl = "http://x.example/l"\nname = "../up"\n', "lists[0].name", "cannot"),
        (
            '[[lists]]\nurl = "http://x.example/a"\nname = "n"\n'
            '[[lists]]\nurl = "http://x.example/b"\nname = "n"\n',
            "lists[1].name",
            "another list",
        ),
        ('[[lists]]\nurl = "http://x.example/l"\nrefresh = "soon"\n', "lists[0].refresh", "6h"),
        ('[[lists]]\nurl = "http://x.example/l"\nrefresh = 5\n', "lists[0].refresh", "60"),
        ('[[lists]]\nurl = "http://x.example/l"\nmax_shrink = 1.5\n', "lists[0].max_shrink", "1"),
        ('[[lists]]\nurl = "http://x.example/l"\nmax_shrink = -1\n', "lists[0].max_shrink", "0"),
        ('[[lists]]\nurl = "http://x.example/l"\nmax_bytes = 10\n', "lists[0].max_bytes", "1024"),
        ('[[lists]]\nurl = "http://x.example/l"\ntimeout = 0\n', "lists[0].timeout", "positive"),
        ('[[lists]]\npath = "block.txt"\nrefresh = "1h"\n', "lists[0].refresh", "only to a list"),
    ],
)
def test_url_list_validation(tmp_path: Path, text: str, key: str, message: str) -> None:
    (tmp_path / "block.txt").write_text("x.example\n")
    err = error(tmp_path, text)
    assert err.key == key and message in err.message, str(err)

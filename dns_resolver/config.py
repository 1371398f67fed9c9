"""The resolver's TOML configuration: parsing, validation, defaults and command-line overrides.

Every key is optional; `docs/configuration.md` lists each one with its default and meaning.
Validation happens once, at load: an unknown key, a value of the wrong type, a bad address or
CIDR, an unknown enum value or a missing list file is a `ConfigError` that names the file and
the key, so an operator can fix the file without reading code. The result is a tree of frozen
dataclasses holding parsed values (addresses as `Address`, CIDRs as `ipaddress` networks),
so the serving code never re-parses strings.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from filtercore.listspec import ListSpec
from filtercore.verdict import Action

__all__ = [
    "AccessConfig",
    "Address",
    "AdminConfig",
    "BlockingConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ListConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PoliciesConfig",
    "PolicyConfig",
    "QueryLogConfig",
    "ScheduleConfig",
    "ReportsConfig",
    "ServerConfig",
    "UpstreamConfig",
    "apply_overrides",
    "default_config",
    "default_data_dir",
    "load_config",
    "parse_address",
    "read_resolv_conf",
    "require_upstreams",
]

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
COMMAND_LINE = "command line"
"""The `ConfigError.path` of errors in command-line flags (there is no file to name)."""

BLOCK_MODES = ("nxdomain", "nodata", "null", "ip")
STRATEGIES = ("failover", "parallel")
ANONYMIZE_MODES = ("truncate", "hash", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
LIST_ACTIONS = {"block": Action.BLOCK, "allow": Action.ALLOW}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A configuration problem, naming the file (or "command line") and the key.

    `str(err)` reads like `config.toml: upstream.strategy: must be "failover" or
    "parallel", got "fast"`.
    """

    def __init__(self, path: str | os.PathLike[str], key: str, message: str) -> None:
        self.path = str(path)
        self.key = key
        self.message = message
        super().__init__(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")


class Address(NamedTuple):
    """An IP literal and a port. `str()` gives the `ADDR:PORT` / `[v6]:PORT` form."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


# --- the configuration tree -------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """Where and how clients are served."""

    listen: tuple[Address, ...] = (Address("127.0.0.1", 5353),)
    udp_payload_size: int = 1232
    tcp_idle_timeout: float = 10.0
    data_dir: str = ""
    workers: int = 1  # processes sharing the port (SO_REUSEPORT); "auto" = usable CPUs
    fast_path: bool = True  # the C UDP fast path (dns_resolver/fastpath.py) when built
    offline: bool = False  # never download lists: URL sources serve their cached copy only


@dataclass(frozen=True)
class UpstreamConfig:
    """Where cache misses are forwarded.

    `from_resolv_conf` is true when `servers` was not configured and came from `resolv_conf`;
    `apply_overrides` then recomputes it when `--listen` changes what "ourselves" means.
    """

    servers: tuple[Address, ...] = ()
    strategy: str = "failover"
    timeout: float = 2.0
    retry_dead_after: float = 30.0
    max_failures: int = 3
    from_resolv_conf: bool = False
    resolv_conf: str = DEFAULT_RESOLV_CONF


@dataclass(frozen=True)
class CacheConfig:
    """The response cache (RFC 2308 negative caching, RFC 8767 serve-stale, prefetch)."""

    enabled: bool = True
    max_entries: int = 100_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_max_ttl: int = 3_600
    serve_stale: bool = False
    stale_answer_ttl: int = 30
    stale_max_age: int = 86_400
    prefetch: bool = False
    prefetch_threshold: float = 0.1
    prefetch_min_hits: int = 3


@dataclass(frozen=True)
class BlockingConfig:
    """How a blocked name is answered.

    `ipv4`/`ipv6` are the addresses `ip` mode answers with ("" = none for that family, which
    then gets NODATA); `null` mode always answers 0.0.0.0 / ::. `filtered_categories` are
    reported with EDE 17 (Filtered, a policy choice) instead of 15 (Blocked).
    """

    mode: str = "nxdomain"
    ipv4: str = ""
    ipv6: str = ""
    ttl: int = 300
    inspect_answers: bool = True
    filtered_categories: tuple[str, ...] = ()


DEFAULT_ALLOW: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(c)
    for c in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


@dataclass(frozen=True)
class AccessConfig:
    """Which clients may query: a source in `deny` is refused even when `allow` covers it."""

    allow: tuple[IPNetwork, ...] = DEFAULT_ALLOW
    deny: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus listener; `listen` is None when disabled."""

    listen: Address | None = Address("127.0.0.1", 9153)

    @property
    def enabled(self) -> bool:
        return self.listen is not None


@dataclass(frozen=True)
class QueryLogConfig:
    """The optional JSON-lines query log. `path` is absolute once loaded."""

    enabled: bool = False
    path: str = "query.log"
    anonymize: str = "truncate"
    max_bytes: int = 100 * 1024 * 1024


@dataclass(frozen=True)
class LoggingConfig:
    """The process's own diagnostic log (stderr)."""

    level: str = "info"
    format: str = "text"


@dataclass(frozen=True)
class AdminConfig:
    """The admin API listener (`reports/`, docs/reports-api.md): off unless enabled, and
    loopback by default, because it can change what is blocked."""

    enabled: bool = False
    listen: Address = Address("127.0.0.1", 8081)


@dataclass(frozen=True)
class ReportsConfig:
    """Public reports and appeals (docs/reports-api.md).

    `database` is an SQLAlchemy URL; "" means SQLite at `<data_dir>/reports.db`.
    `form_url`/`page_url` are where the block page's form posts and links; they default to
    the admin listener's `/api/reports` and `/report` once the config is loaded.
    """

    database: str = ""
    allow: tuple[IPNetwork, ...] = DEFAULT_ALLOW
    rate_per_minute: float = 6.0
    burst: int = 10
    form_url: str = ""
    page_url: str = ""
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class ListConfig:
    """One `[[lists]]` entry; `path` is absolute once loaded.

    A source given by URL (`url`, or a `path` that is an http(s) URL) has `url` set and
    `path` pointing at its cached copy under `<data_dir>/sources/<name>/` (see `listsync`),
    which may not exist until the first `filterdns lists update`. `refresh`, `max_shrink`,
    `max_bytes` and `timeout` apply to URL sources only.
    """

    path: str
    name: str | None = None
    format: str = "auto"
    category: str | None = None
    action: str = "block"
    url: str | None = None
    refresh: float = 86_400.0
    max_shrink: float = 0.5
    max_bytes: int = 512 * 1024 * 1024
    timeout: float = 300.0

    def to_spec(self) -> ListSpec:
        """The `filtercore.listspec.ListSpec` that compiles this list."""
        return ListSpec(
            path=self.path,
            name=self.name,
            format=self.format,
            category=self.category,
            action=LIST_ACTIONS[self.action],
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """One `[[policies.NAME.schedule]]` window (see `dns_resolver.schedule`)."""

    days: tuple[int, ...]  # 0 = Monday
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight; <= start: runs past midnight
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class AllowanceConfig:
    """One `[[policies.NAME.allowance]]`: `minutes` a day of `category` per client."""

    category: str
    minutes: int


@dataclass(frozen=True)
class PolicyConfig:
    """One `[policies.NAME]` table (docs/policies.md).

    `clients` are networks (most specific wins across policies), `macs` the MAC addresses
    (lower case, colon-separated) and `cpe_ids` the CPE-ID strings that dnsmasq-style
    forwarders add as EDNS options. `mode`/`ttl` None: `[blocking]`'s (also after
    `--block-mode`).
    """

    name: str
    clients: tuple[IPNetwork, ...] = ()
    macs: tuple[str, ...] = ()
    cpe_ids: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    block_domains: tuple[str, ...] = ()
    mode: str | None = None
    ttl: int | None = None
    child: bool = False
    bypass_prevention: bool = False
    safe_search: bool = False
    youtube: str = "off"
    block_unsafe_search: bool = False
    timezone: str = "UTC"
    schedule: tuple[ScheduleConfig, ...] = ()
    allowances: tuple[AllowanceConfig, ...] = ()
    block_all: bool = False  # the implicit default policy: every category blocks


@dataclass(frozen=True)
class BlockPageConfig:
    """The `[blockpage]` HTTP server that explains blocks (ip mode points names at it)."""

    enabled: bool = False
    listen: Address = Address("127.0.0.1", 8080)
    https_listen: Address | None = None
    review_url: str = ""


@dataclass(frozen=True)
class PoliciesConfig:
    """Per-client policies: `[policies.*]` and `[clients]`. Empty `policies`: no policy
    layer at all (every client gets the lists as `[blocking]` says).

    `state_dir` is the absolute data directory (allowance minutes live there).
    """

    policies: tuple[PolicyConfig, ...] = ()
    trusted_forwarders: tuple[IPNetwork, ...] = ()
    state_dir: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.policies)


@dataclass(frozen=True)
class Config:
    """The whole configuration. `source` is the file it came from (None for the default)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    blocking: BlockingConfig = field(default_factory=BlockingConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    querylog: QueryLogConfig = field(default_factory=QueryLogConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    lists: tuple[ListConfig, ...] = ()
    policy: PoliciesConfig = field(default_factory=PoliciesConfig)
    blockpage: BlockPageConfig = field(default_factory=BlockPageConfig)
    source: str | None = None

    def list_specs(self, entries: Iterable[ListConfig] | None = None) -> list[ListSpec]:
        """The lists to compile (`entries`, default all), in configuration order.

        A list that a policy names (`lists = [...]`) and that has no category of its own
        gets its name as its category, so the policy can block exactly that list. Both the
        in-process compile and the snapshot (listsync) use this, so they agree.
        """
        specs = [entry.to_spec() for entry in (self.lists if entries is None else entries)]
        named = {name for p in self.policy.policies for name in p.lists}
        if not named:
            return specs
        return [
            replace(spec, category=spec.display_name) if _own_category(spec, named) else spec
            for spec in specs
        ]


def _own_category(spec: ListSpec, named: set[str]) -> bool:
    """A single list file a policy names, without a category: trees keep their folders'."""
    path = Path(spec.path)
    return (
        spec.category is None
        and spec.display_name in named
        and spec.format != "ut1"
        and path.is_file()
        and not path.name.endswith((".tar.gz", ".tgz"))
    )


# --- small parsers shared by the file and the command line ------------------------------


def parse_address(text: str, default_port: int | None = None) -> Address:
    """Parse `ADDR:PORT`, `[V6]:PORT`, or (with `default_port`) a bare `ADDR` / `V6`.

    Only IP literals are accepted: a host name would need a resolver to resolve it, and a
    resolver's own upstream must not depend on itself.

    Raises:
        ValueError: with a message suitable for a `ConfigError`.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        # No colon (bare IPv4) or several (bare IPv6 without brackets).
        host, port_text = text, None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        where = f"{text!r}: {host!r}" if host != text else repr(text)
        raise ValueError(f"{where} is not an IP address") from None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r}: a port is required (ADDR:PORT or [V6]:PORT)")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ValueError(f"{text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r}: port {port} is outside 1..65535")
    return Address(str(ip) if ip.version == 4 else ip.compressed, port)


def read_resolv_conf(path: str | os.PathLike[str] = DEFAULT_RESOLV_CONF) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order; [] if it is missing.

    Comments (`#`, `;`) and malformed addresses are skipped, as the C library does.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    servers: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(words[1])))
            except ValueError:
                continue
    return servers


def _is_ourselves(server: Address, listen: Iterable[Address]) -> bool:
    """True if forwarding to `server` would send a query back to one of our listeners."""
    server_ip = ipaddress.ip_address(server.host.split("%", 1)[0])
    for own in listen:
        if own.port != server.port:
            continue
        own_ip = ipaddress.ip_address(own.host.split("%", 1)[0])
        if own_ip == server_ip:
            return True
        # A wildcard listener also answers on every local address; loopback is the one a
        # resolv.conf names in practice (127.0.0.1, ::1, 127.0.0.53 is another daemon's).
        if own_ip.is_unspecified and server_ip.is_loopback and own_ip.version == server_ip.version:
            return True
    return False


def _upstreams_from_resolv_conf(path: str, listen: Sequence[Address]) -> tuple[Address, ...]:
    servers = (Address(ns, 53) for ns in read_resolv_conf(path))
    return tuple(s for s in servers if not _is_ourselves(s, listen))


def require_upstreams(config: Config) -> None:
    """Raise `ConfigError` if there is no upstream to forward to.

    Not done by `load_config`, because `--upstream` may still supply one; `filterdns serve`
    calls this after `apply_overrides`.
    """
    if not config.upstream.servers:
        where = config.source or COMMAND_LINE
        raise ConfigError(
            where,
            "upstream.servers",
            f"no upstream: none configured and {config.upstream.resolv_conf} names no "
            "nameserver other than filterdns itself (set upstream.servers or --upstream)",
        )


# --- typed access to the parsed TOML ----------------------------------------------------

T = TypeVar("T")


class _Section:
    """Reads one TOML table, checking each key's type and rejecting keys nobody read."""

    def __init__(self, file: str, prefix: str, table: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(table, Mapping):
            raise ConfigError(file, prefix, f"must be a table, got {_tname(table)}")
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass in Python, but `port = true` is a mistake, not a port.
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"must be {_kinds(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(name, f"must be {_kinds(kinds)}, got {_tname(value)}")
        if float in kinds and isinstance(value, int):
            value = float(value)
        return value  # type: ignore[return-value]

    def string(self, name: str, default: str) -> str:
        return self.get(name, str, default)

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self.string(name, default)
        if value not in choices:
            quoted = [f'"{c}"' for c in choices]
            options = " or ".join(quoted) if len(quoted) == 2 else ", ".join(quoted)
            if len(quoted) > 2:
                options = ", ".join(quoted[:-1]) + " or " + quoted[-1]
            raise self.error(name, f'must be {options}, got "{value}"')
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self.get(name, bool, default)

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.get(name, int, default)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self.error(name, f"must be {bound}, got {value}")
        return value

    def number(
        self, name: str, default: float, *, positive: bool = True, maximum: float | None = None
    ) -> float:
        value = self.get(name, (int, float), default)
        if math.isnan(value) or math.isinf(value):
            raise self.error(name, f"must be a finite number, got {value}")
        if positive and value <= 0:
            raise self.error(name, f"must be a positive number, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return float(value)

    def strings(self, name: str, default: Sequence[str]) -> list[str]:
        value = self.get(name, list, list(default))
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(
                    self.file, f"{self.key(name)}[{i}]", f"must be a string, got {_tname(item)}"
                )
        return list(value)

    def parsed_list(
        self, name: str, default: Sequence[str], parse: Callable[[str], T]
    ) -> tuple[T, ...]:
        """A list of strings, each run through `parse` (a ValueError names the item)."""
        out = []
        for i, item in enumerate(self.strings(name, default)):
            try:
                out.append(parse(item))
            except ValueError as e:
                raise ConfigError(self.file, f"{self.key(name)}[{i}]", str(e)) from None
        return tuple(out)

    def finish(self) -> None:
        """Reject keys that no reader asked for: a typo must not be silently ignored."""
        for name in self.table:
            if name not in self.used:
                raise self.error(name, "unknown key")


def _tname(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    for kind, label in names.items():
        if type(value) is kind:
            return label
    return type(value).__name__


def _kinds(kinds: tuple[type, ...]) -> str:
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(_tname(k()) for k in kinds)


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR (like 10.0.0.0/8 or fc00::/7)") from None


def _ip_of_version(section: _Section, name: str, version: int) -> str:
    value = section.string(name, "").strip()
    if not value:
        return ""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise section.error(name, f'"{value}" is not an IPv{version} address') from None
    if ip.version != version:
        raise section.error(name, f'"{value}" is not an IPv{version} address')
    return str(ip)


# --- sections -----------------------------------------------------------------------------


def _server(file: str, table: Any) -> ServerConfig:
    s = _Section(file, "server", table)
    d = ServerConfig()
    listen = s.parsed_list("listen", [str(a) for a in d.listen], parse_address)
    if not listen:
        raise s.error("listen", "must name at least one ADDR:PORT")
    cfg = ServerConfig(
        listen=tuple(dict.fromkeys(listen)),
        udp_payload_size=s.integer(
            "udp_payload_size", d.udp_payload_size, minimum=512, maximum=65535
        ),
        tcp_idle_timeout=s.number("tcp_idle_timeout", d.tcp_idle_timeout),
        data_dir=s.string("data_dir", d.data_dir),
        workers=_workers(s, d.workers),
        fast_path=s.get("fast_path", bool, d.fast_path),
        offline=s.boolean("offline", d.offline),
    )
    s.finish()
    return cfg


MAX_WORKERS = 256


def _workers(s: _Section, default: int) -> int:
    """`workers = N` (1..MAX_WORKERS) or `"auto"` (one per CPU this process may use)."""
    value = s.get("workers", (int, str), default)
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise s.error("workers", f'must be 1..{MAX_WORKERS} or "auto", got {value!r}')
    return value


def _upstream(file: str, table: Any, listen: Sequence[Address], resolv_conf: str) -> UpstreamConfig:
    s = _Section(file, "upstream", table)
    d = UpstreamConfig()
    servers = s.parsed_list("servers", [], lambda t: parse_address(t, default_port=53))
    for i, server in enumerate(servers):
        if _is_ourselves(server, listen):
            raise ConfigError(
                file, f"upstream.servers[{i}]", f"{server} is one of our own listen addresses"
            )
    from_resolv = not servers
    if from_resolv:
        servers = _upstreams_from_resolv_conf(resolv_conf, listen)
    cfg = UpstreamConfig(
        servers=tuple(dict.fromkeys(servers)),
        strategy=s.choice("strategy", STRATEGIES, d.strategy),
        timeout=s.number("timeout", d.timeout, maximum=60.0),
        retry_dead_after=s.number("retry_dead_after", d.retry_dead_after),
        max_failures=s.integer("max_failures", d.max_failures, minimum=1),
        from_resolv_conf=from_resolv,
        resolv_conf=resolv_conf,
    )
    s.finish()
    return cfg


def _cache(file: str, table: Any) -> CacheConfig:
    s = _Section(file, "cache", table)
    d = CacheConfig()
    cfg = CacheConfig(
        enabled=s.boolean("enabled", d.enabled),
        max_entries=s.integer("max_entries", d.max_entries, minimum=1),
        min_ttl=s.integer("min_ttl", d.min_ttl),
        max_ttl=s.integer("max_ttl", d.max_ttl, minimum=1),
        negative_max_ttl=s.integer("negative_max_ttl", d.negative_max_ttl),
        serve_stale=s.boolean("serve_stale", d.serve_stale),
        stale_answer_ttl=s.integer("stale_answer_ttl", d.stale_answer_ttl, minimum=1),
        stale_max_age=s.integer("stale_max_age", d.stale_max_age, minimum=1),
        prefetch=s.boolean("prefetch", d.prefetch),
        prefetch_threshold=s.number("prefetch_threshold", d.prefetch_threshold, maximum=1.0),
        prefetch_min_hits=s.integer("prefetch_min_hits", d.prefetch_min_hits, minimum=1),
    )
    if cfg.min_ttl > cfg.max_ttl:
        raise s.error(
            "min_ttl", f"must not exceed cache.max_ttl ({cfg.max_ttl}), got {cfg.min_ttl}"
        )
    s.finish()
    return cfg


def _blocking(file: str, table: Any) -> BlockingConfig:
    s = _Section(file, "blocking", table)
    d = BlockingConfig()
    cfg = BlockingConfig(
        mode=s.choice("mode", BLOCK_MODES, d.mode),
        ipv4=_ip_of_version(s, "ipv4", 4),
        ipv6=_ip_of_version(s, "ipv6", 6),
        ttl=s.integer("ttl", d.ttl, maximum=2**31 - 1),
        inspect_answers=s.boolean("inspect_answers", d.inspect_answers),
        filtered_categories=tuple(s.strings("filtered_categories", d.filtered_categories)),
    )
    s.finish()
    _check_ip_mode(cfg, file, "blocking.mode")
    return cfg


def _check_ip_mode(cfg: BlockingConfig, file: str, key: str) -> None:
    """`ip` mode answers with a configured address, so it needs a usable one."""
    if cfg.mode != "ip":
        return
    usable = [a for a in (cfg.ipv4, cfg.ipv6) if a and not ipaddress.ip_address(a).is_unspecified]
    if not usable:
        raise ConfigError(
            file,
            key,
            '"ip" needs blocking.ipv4 and/or blocking.ipv6 set to a block-page address '
            '(not 0.0.0.0 or ::; use mode "null" for those)',
        )


def _access(file: str, table: Any) -> AccessConfig:
    s = _Section(file, "access", table)
    d = AccessConfig()
    cfg = AccessConfig(
        allow=s.parsed_list("allow", [str(n) for n in d.allow], _network),
        deny=s.parsed_list("deny", [], _network),
    )
    s.finish()
    return cfg


def _metrics(file: str, table: Any) -> MetricsConfig:
    s = _Section(file, "metrics", table)
    text = s.string("listen", "127.0.0.1:9153")
    try:
        listen = parse_address(text) if text.strip() else None
    except ValueError as e:
        raise s.error("listen", str(e)) from None
    s.finish()
    return MetricsConfig(listen=listen)


def _querylog(file: str, table: Any, base: Path) -> QueryLogConfig:
    s = _Section(file, "querylog", table)
    d = QueryLogConfig()
    path = s.string("path", d.path)
    if not path.strip():
        raise s.error("path", "must not be empty")
    cfg = QueryLogConfig(
        enabled=s.boolean("enabled", d.enabled),
        path=str(base / path),
        anonymize=s.choice("anonymize", ANONYMIZE_MODES, d.anonymize),
        max_bytes=s.integer("max_bytes", d.max_bytes, minimum=4096),
    )
    s.finish()
    return cfg


def _logging(file: str, table: Any) -> LoggingConfig:
    s = _Section(file, "logging", table)
    d = LoggingConfig()
    cfg = LoggingConfig(
        level=s.choice("level", LOG_LEVELS, d.level),
        format=s.choice("format", LOG_FORMATS, d.format),
    )
    s.finish()
    return cfg


def _admin(file: str, table: Any) -> AdminConfig:
    s = _Section(file, "admin", table)
    d = AdminConfig()
    listen = _listen(s, "listen", str(d.listen))
    assert listen is not None
    cfg = AdminConfig(enabled=s.boolean("enabled", d.enabled), listen=listen)
    s.finish()
    return cfg


def _reports(file: str, table: Any, admin: AdminConfig) -> ReportsConfig:
    s = _Section(file, "reports", table)
    d = ReportsConfig()
    database = s.string("database", d.database).strip()
    if database and "://" not in database:
        raise s.error(
            "database",
            f'"{database}" is not a database URL (like "postgresql://user@host/db"); '
            '"" means SQLite in data_dir',
        )
    urls = {}
    for key, default in (("form_url", "/api/reports"), ("page_url", "/report")):
        url = s.string(key, "").strip() or f"http://{admin.listen}{default}"
        if not url.startswith(("http://", "https://")):
            raise s.error(key, f'"{url}" is not an http:// or https:// URL')
        urls[key] = url
    cfg = ReportsConfig(
        database=database,
        allow=s.parsed_list("allow", [str(n) for n in d.allow], _network),
        rate_per_minute=s.number("rate_per_minute", d.rate_per_minute, maximum=60_000.0),
        burst=s.integer("burst", d.burst, minimum=1, maximum=100_000),
        trusted_proxies=s.parsed_list("trusted_proxies", [], _network),
        **urls,
    )
    s.finish()
    return cfg


def _known_formats() -> frozenset[str]:
    """The list format names a config may use: filtercore's formats and "auto"."""
    from filtercore.formats import FORMATS

    return frozenset(FORMATS) | {"auto"}


def _lists(
    file: str, entries: Any, base: Path, prefix: str = "lists", data_dir: Path | None = None
) -> tuple[ListConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError(
            file, prefix, f"must be an array of tables ([[lists]]), got {_tname(entries)}"
        )
    from listsync.sources import body_path

    known = _known_formats()
    out = []
    source_names: set[str] = set()
    for i, entry in enumerate(entries):
        s = _Section(file, f"{prefix}[{i}]", entry)
        name = s.string("name", "") or None
        url = _list_url(s, entry)
        if url is not None:
            name = _source_name(s, url, name, source_names)
            path = body_path(data_dir or base, name, url)
        else:
            if "path" not in entry:
                raise s.error("path", "is required (a file, folder, archive or http(s) URL)")
            raw_path = s.string("path", "")
            if not raw_path.strip():
                raise s.error("path", "must not be empty")
            path = base / Path(raw_path).expanduser()
            if not path.exists():
                raise s.error("path", f"{path}: no such file or folder")
        fmt = s.string("format", "auto")
        if fmt not in known:
            raise s.error("format", f'unknown format "{fmt}" (one of {", ".join(sorted(known))})')
        category = s.string("category", "") or None
        action = s.choice("action", tuple(LIST_ACTIONS), "block")
        d = ListConfig(path="")
        fetch = {
            "refresh": _duration(s, "refresh", d.refresh),
            "max_shrink": s.number("max_shrink", d.max_shrink, positive=False, maximum=1.0),
            "max_bytes": s.integer("max_bytes", d.max_bytes, minimum=1024),
            "timeout": s.number("timeout", d.timeout, maximum=3600.0),
        }
        if fetch["max_shrink"] < 0:
            raise s.error("max_shrink", f"must be between 0 and 1, got {fetch['max_shrink']}")
        if url is None:
            for key in fetch:
                if key in entry:
                    raise s.error(key, "applies only to a list given by URL")
        s.finish()
        out.append(
            ListConfig(
                path=str(path),
                name=name,
                format=fmt,
                category=category,
                action=action,
                url=url,
                **fetch,  # type: ignore[arg-type]
            )
        )
    return tuple(out)


def _list_url(s: _Section, entry: Mapping[str, Any]) -> str | None:
    """The http(s) URL of a list given by `url` or by a URL `path`; None for a local list."""
    from listsync.sources import is_url, url_file_name

    url = s.string("url", "").strip() or None
    key = "url"
    raw_path = entry.get("path")
    if isinstance(raw_path, str) and is_url(raw_path.strip()):
        if url is not None:
            raise s.error("url", "give the URL in url or in path, not both")
        s.used.add("path")
        url, key = raw_path.strip(), "path"
    elif url is not None and "path" in entry:
        raise s.error("path", "a list given by url has no path (its copy is kept in data_dir)")
    if url is None:
        return None
    if not is_url(url):
        raise s.error(key, f'"{url}" is not an http:// or https:// URL')
    try:
        url_file_name(url)
    except ValueError as e:
        raise s.error(key, str(e)) from None
    return url


def _source_name(s: _Section, url: str, name: str | None, seen: set[str]) -> str:
    """A URL source's name names its cache folder: safe as a file name and unique."""
    from listsync.sources import check_source_name, default_source_name

    name = name or default_source_name(url)
    try:
        check_source_name(name)
    except ValueError as e:
        raise s.error("name", str(e)) from None
    if name in seen:
        raise s.error("name", f'"{name}" names another list given by URL; give each its own name')
    seen.add(name)
    return name


def _duration(s: _Section, name: str, default: float) -> float:
    """Seconds, or a string like "30m", "6h", "1d"; at least a minute (be kind to mirrors)."""
    from listsync.sources import parse_duration

    value = s.get(name, (int, float, str), default)
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise s.error(name, str(e)) from None
    if seconds < 60:
        raise s.error(name, f"must be at least 60 seconds, got {value!r}")
    return seconds


# --- policies (issue 6) -------------------------------------------------------------------

POLICY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _known_categories(lists: Sequence[ListConfig]) -> set[str]:
    """Category names a policy may use: the canonical ones and those the lists bring."""
    from filtercore.categories import CategoryMap

    known = set(CategoryMap.load().names)
    for entry in lists:
        known.update(c for c in (entry.category, entry.name) if c)
    return known


def _categories(s: _Section, name: str, known: set[str]) -> tuple[str, ...]:
    values = s.strings(name, [])
    for i, value in enumerate(values):
        if value not in known:
            raise ConfigError(
                s.file,
                f"{s.key(name)}[{i}]",
                f'unknown category "{value}" (one of {", ".join(sorted(known))})',
            )
    return tuple(dict.fromkeys(values))


def _domain(text: str) -> str:
    from filtercore.errors import InvalidNameError
    from filtercore.normalize import normalize_name

    try:
        return normalize_name(text)
    except InvalidNameError as e:
        raise ValueError(str(e)) from None


def _mac(text: str) -> str:
    parts = text.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts
    ):
        raise ValueError(f"{text!r} is not a MAC address (like 02:00:5e:10:00:01)")
    return ":".join(parts)


def _clock(text: str) -> int:
    from dns_resolver.schedule import parse_clock

    return parse_clock(text)


def _days(s: _Section) -> tuple[int, ...]:
    from dns_resolver.schedule import DAYS

    aliases = {"weekdays": DAYS[:5], "weekend": DAYS[5:], "everyday": DAYS}
    days: list[int] = []
    for i, text in enumerate(s.strings("days", list(DAYS))):
        word = text.strip().lower()[:3] if text.strip().lower() not in aliases else text.lower()
        names = aliases.get(word, (word,))
        for day in names:
            if day not in DAYS:
                raise ConfigError(
                    s.file,
                    f"{s.key('days')}[{i}]",
                    f'"{text}" is not a day (mon..sun, "weekdays", "weekend" or "everyday")',
                )
            days.append(DAYS.index(day))
    if not days:
        raise s.error("days", "must name at least one day")
    return tuple(sorted(set(days)))


def _schedule(file: str, prefix: str, entries: Any, known: set[str]) -> tuple[ScheduleConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError(file, prefix, f"must be an array of tables, got {_tname(entries)}")
    out = []
    for i, entry in enumerate(entries):
        s = _Section(file, f"{prefix}[{i}]", entry)
        times = {}
        for key in ("start", "end"):
            if key not in entry:
                raise s.error(key, "is required (HH:MM, local time)")
            try:
                times[key] = _clock(s.string(key, ""))
            except ValueError as e:
                raise s.error(key, str(e)) from None
        window = ScheduleConfig(
            days=_days(s),
            start=times["start"],
            end=times["end"],
            block=_categories(s, "block", known),
            allow=_categories(s, "allow", known),
            name=s.string("name", ""),
        )
        if not window.block and not window.allow:
            raise s.error("block", "a window must block or allow at least one category")
        s.finish()
        out.append(window)
    return tuple(out)


def _allowances(
    file: str, prefix: str, entries: Any, known: set[str]
) -> tuple[AllowanceConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError(file, prefix, f"must be an array of tables, got {_tname(entries)}")
    out: list[AllowanceConfig] = []
    for i, entry in enumerate(entries):
        s = _Section(file, f"{prefix}[{i}]", entry)
        if "category" not in entry:
            raise s.error("category", "is required")
        category = s.string("category", "")
        if category not in known:
            raise s.error("category", f'unknown category "{category}"')
        if any(a.category == category for a in out):
            raise s.error("category", f'"{category}" has two allowances')
        out.append(AllowanceConfig(category, s.integer("minutes", 60, minimum=1, maximum=1440)))
        s.finish()
    return tuple(out)


def _policy(
    file: str,
    name: str,
    table: Any,
    blocking: BlockingConfig,
    lists: Sequence[ListConfig],
    known: set[str],
) -> PolicyConfig:
    prefix = f"policies.{name}"
    if not name or not set(name) <= POLICY_NAME_CHARS:
        raise ConfigError(file, prefix, "a policy name may hold only a-z, 0-9, - and _")
    s = _Section(file, prefix, table)
    list_names = {entry.name or Path(entry.path).name for entry in lists}
    named_lists = tuple(s.strings("lists", []))
    for i, list_name in enumerate(named_lists):
        if list_name not in list_names:
            raise ConfigError(
                file, f"{prefix}.lists[{i}]", f'no [[lists]] entry is named "{list_name}"'
            )
    block = _categories(s, "block", known)
    child = s.boolean("child", "adult" in block)
    mode = s.choice("mode", BLOCK_MODES, "") if "mode" in table else None
    timezone = s.string("timezone", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):
        raise s.error("timezone", f'unknown time zone "{timezone}" (like "Europe/Paris")') from None
    from dns_resolver.safesearch import YOUTUBE_MODES

    if name == "default" and "clients" in table:
        raise s.error("clients", "the default policy applies to every other client")
    cfg = PolicyConfig(
        name=name,
        clients=s.parsed_list("clients", [], _network),
        macs=s.parsed_list("macs", [], _mac),
        cpe_ids=tuple(s.strings("cpe_ids", [])),
        block=block,
        lists=named_lists,
        allow_domains=s.parsed_list("allow_domains", [], _domain),
        block_domains=s.parsed_list("block_domains", [], _domain),
        mode=mode,
        ttl=s.integer("ttl", 0, maximum=2**31 - 1) if "ttl" in table else None,
        child=child,
        bypass_prevention=s.boolean("bypass_prevention", child),
        safe_search=s.boolean("safe_search", False),
        youtube=s.choice("youtube", YOUTUBE_MODES, "off"),
        block_unsafe_search=s.boolean("block_unsafe_search", False),
        timezone=timezone,
        schedule=_schedule(file, f"{prefix}.schedule", table.get("schedule", []), known),
        allowances=_allowances(file, f"{prefix}.allowance", table.get("allowance", []), known),
    )
    s.used.update(("schedule", "allowance"))
    s.finish()
    if mode is not None:
        _check_ip_mode(replace(blocking, mode=mode), file, f"{prefix}.mode")
    return cfg


def _policies(
    file: str,
    policies: Any,
    clients: Any,
    blocking: BlockingConfig,
    lists: Sequence[ListConfig],
    state_dir: Path,
) -> PoliciesConfig:
    if not isinstance(policies, Mapping):
        raise ConfigError(
            file, "policies", f"must be a table ([policies.NAME]), got {_tname(policies)}"
        )
    c = _Section(file, "clients", clients)
    trusted = c.parsed_list("trusted_forwarders", [], _network)
    c.finish()
    if not policies:
        return PoliciesConfig(trusted_forwarders=trusted, state_dir=str(state_dir))
    known = _known_categories(lists)
    out = [_policy(file, name, table, blocking, lists, known) for name, table in policies.items()]
    if "default" not in policies:
        # Clients no policy names keep what they had without policies: every list blocks.
        out.append(PolicyConfig(name="default", block_all=True))
    seen: dict[object, str] = {}
    for policy in out:
        for kind, values in (
            ("clients", policy.clients),
            ("macs", policy.macs),
            ("cpe_ids", policy.cpe_ids),
        ):
            for value in values:
                other = seen.setdefault((kind, value), policy.name)
                if other != policy.name:
                    raise ConfigError(
                        file,
                        f"policies.{policy.name}.{kind}",
                        f"{value} is already mapped to policy {other!r}",
                    )
    return PoliciesConfig(tuple(out), trusted, str(state_dir))


def _listen(s: _Section, name: str, default: str) -> Address | None:
    """An `ADDR:PORT` key; "" (when allowed by a "" default) means none."""
    text = s.string(name, default).strip()
    if not text and not default:
        return None
    try:
        return parse_address(text)
    except ValueError as e:
        raise s.error(name, str(e)) from None


def _blockpage(file: str, table: Any) -> BlockPageConfig:
    s = _Section(file, "blockpage", table)
    d = BlockPageConfig()
    listen = _listen(s, "listen", str(d.listen))
    assert listen is not None
    https = _listen(s, "https_listen", "")
    review_url = s.string("review_url", "").strip()
    if review_url and not review_url.startswith(("http://", "https://")):
        raise s.error("review_url", f'"{review_url}" is not an http:// or https:// URL')
    cfg = BlockPageConfig(
        enabled=s.boolean("enabled", d.enabled),
        listen=listen,
        https_listen=https,
        review_url=review_url,
    )
    s.finish()
    return cfg


def _build(
    file: str,
    data: Mapping[str, Any],
    base: Path,
    resolv_conf: str,
    default_lists: Callable[[], tuple[ListConfig, ...]] | None = None,
) -> Config:
    top = _Section(file, "", data)
    server = _server(file, top.get("server", dict, {}))
    upstream = _upstream(file, top.get("upstream", dict, {}), server.listen, resolv_conf)
    data_dir = server.data_dir
    log_base = base / data_dir if data_dir else base
    if "lists" in data:
        top.used.add("lists")
        lists = _lists(file, data["lists"], base, data_dir=log_base)
    else:
        lists = default_lists() if default_lists else ()
    blocking = _blocking(file, top.get("blocking", dict, {}))
    config = Config(
        server=server,
        upstream=upstream,
        cache=_cache(file, top.get("cache", dict, {})),
        blocking=blocking,
        access=_access(file, top.get("access", dict, {})),
        metrics=_metrics(file, top.get("metrics", dict, {})),
        querylog=_querylog(file, top.get("querylog", dict, {}), log_base),
        logging=_logging(file, top.get("logging", dict, {})),
        admin=(admin := _admin(file, top.get("admin", dict, {}))),
        reports=_reports(file, top.get("reports", dict, {}), admin),
        lists=lists,
        policy=_policies(
            file,
            top.get("policies", dict, {}),
            top.get("clients", dict, {}),
            blocking,
            lists,
            log_base,
        ),
        blockpage=_blockpage(file, top.get("blockpage", dict, {})),
        source=file if file != "<default>" else None,
    )
    top.finish()
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid TOML: not UTF-8 text") from None


def load_config(path: str | os.PathLike[str], *, resolv_conf: str = DEFAULT_RESOLV_CONF) -> Config:
    """Read and validate a TOML config file.

    Relative paths inside it (lists, the query log, data_dir) are relative to the file's
    folder, so a config works whatever the current directory of the daemon. A config file
    without `[[lists]]` filters nothing: the bundled lists are the no-config default only.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    p = Path(path)
    data = _read_toml(p)
    return _build(str(p), data, p.parent.resolve(), resolv_conf)


def bundled_lists_file() -> Path:
    """The `lists.toml` describing the bundled default lists.

    Installed, it is the resource `filterdns.lists/default/lists.toml`; in a source tree the
    same file lives under `<repo>/lists/default/`.
    """
    try:
        resource = importlib.resources.files("filterdns.lists") / "default" / "lists.toml"
        if resource.is_file():
            return Path(str(resource))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "lists" / "default" / "lists.toml"


def load_bundled_lists(path: str | os.PathLike[str] | None = None) -> tuple[ListConfig, ...]:
    """The bundled lists: `[[lists]]` entries of `lists.toml`, paths relative to it."""
    p = Path(path) if path is not None else bundled_lists_file()
    data = _read_toml(p)
    top = _Section(str(p), "", data)
    top.used.add("lists")
    top.finish()
    return _lists(str(p), data.get("lists", []), p.parent.resolve())


UT1_DOWNLOADS = "https://dsi.ut-capitole.fr/blacklists/download/"
"""UT1's per-category archives; `FILTERDNS_UT1_BASE_URL` replaces this prefix (tests)."""
DOWNLOADS_FILE = "downloads.toml"


def default_data_dir() -> Path:
    """Where the embedded default keeps its state: systemd's `$STATE_DIRECTORY` (the unit's
    `StateDirectory=`, /var/lib/filterdns), else `$XDG_DATA_HOME/filterdns`, else
    `~/.local/share/filterdns`."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "filterdns"


def load_default_sources(
    data_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> tuple[ListConfig, ...]:
    """The embedded default's lists given by URL (`downloads.toml` beside the bundled
    `lists.toml`; none if that file is absent), their copies kept under `data_dir`."""
    p = Path(path) if path is not None else bundled_lists_file().with_name(DOWNLOADS_FILE)
    if not p.is_file():
        return ()
    data = _read_toml(p)
    top = _Section(str(p), "", data)
    top.used.add("lists")
    top.finish()
    base_url = os.environ.get("FILTERDNS_UT1_BASE_URL", "").rstrip("/")
    entries = data.get("lists", [])
    if base_url and isinstance(entries, list):
        entries = [
            {**e, "url": base_url + "/" + e["url"].removeprefix(UT1_DOWNLOADS)}
            if isinstance(e, dict) and str(e.get("url", "")).startswith(UT1_DOWNLOADS)
            else e
            for e in entries
        ]
    return _lists(str(p), entries, p.parent.resolve(), data_dir=Path(data_dir))


def default_config(
    *,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
    lists_file: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
) -> Config:
    """The embedded configuration `filterdns serve` runs without `--config`.

    127.0.0.1:5353, upstreams from resolv.conf minus ourselves, the bundled lists plus the
    large UT1 categories by URL (`downloads.toml`; `offline`: never downloaded), state in `data_dir`
    (default `default_data_dir()`), metrics on 127.0.0.1:9153; everything else at its
    documented default.
    """
    root = Path(data_dir).resolve() if data_dir is not None else default_data_dir()
    downloads = Path(lists_file).with_name(DOWNLOADS_FILE) if lists_file is not None else None

    def lists() -> tuple[ListConfig, ...]:
        return load_bundled_lists(lists_file) + load_default_sources(root, downloads)

    return _build(
        "<default>",
        {"server": {"data_dir": str(root), "offline": offline}},
        Path.cwd(),
        resolv_conf,
        default_lists=lists,
    )


def apply_overrides(
    config: Config,
    *,
    listen: Sequence[str] = (),
    upstream: Sequence[str] = (),
    lists: Sequence[str] = (),
    block_mode: str | None = None,
    metrics_listen: str | None = None,
) -> Config:
    """Apply the `serve` flags. A repeatable flag, when given, replaces the config's value.

    `lists` items are `PATH[:CATEGORY[:FORMAT]]`, relative to the current directory.
    `metrics_listen=""` disables metrics.

    Raises:
        ConfigError: with path "command line" and the flag as the key.
    """
    server, ups, blocking, metrics = config.server, config.upstream, config.blocking, config.metrics
    if listen:
        parsed = _flag_list("--listen", listen, parse_address)
        server = replace(server, listen=tuple(dict.fromkeys(parsed)))
    if upstream:
        parsed = _flag_list("--upstream", upstream, lambda t: parse_address(t, default_port=53))
        for item in parsed:
            if _is_ourselves(item, server.listen):
                raise ConfigError(
                    COMMAND_LINE, "--upstream", f"{item} is one of our own listen addresses"
                )
        ups = replace(ups, servers=tuple(dict.fromkeys(parsed)), from_resolv_conf=False)
    elif listen and ups.from_resolv_conf:
        ups = replace(ups, servers=_upstreams_from_resolv_conf(ups.resolv_conf, server.listen))
    new_lists = config.lists
    if lists:
        new_lists = tuple(_list_flag(text) for text in lists)
    if block_mode is not None:
        if block_mode not in BLOCK_MODES:
            raise ConfigError(
                COMMAND_LINE,
                "--block-mode",
                f'must be {", ".join(BLOCK_MODES[:-1])} or {BLOCK_MODES[-1]}, got "{block_mode}"',
            )
        blocking = replace(blocking, mode=block_mode)
        _check_ip_mode(blocking, COMMAND_LINE, "--block-mode")
    if metrics_listen is not None:
        try:
            addr = parse_address(metrics_listen) if metrics_listen.strip() else None
        except ValueError as e:
            raise ConfigError(COMMAND_LINE, "--metrics-listen", str(e)) from None
        metrics = MetricsConfig(listen=addr)
    return replace(
        config, server=server, upstream=ups, blocking=blocking, metrics=metrics, lists=new_lists
    )


def _flag_list(flag: str, items: Sequence[str], parse: Callable[[str], T]) -> list[T]:
    out = []
    for item in items:
        try:
            out.append(parse(item))
        except ValueError as e:
            raise ConfigError(COMMAND_LINE, flag, str(e)) from None
    return out


def _list_flag(text: str) -> ListConfig:
    from filtercore.errors import FilterError

    try:
        spec = ListSpec.parse(text)
    except FilterError as e:
        raise ConfigError(COMMAND_LINE, "--list", str(e)) from None
    path = Path(spec.path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(COMMAND_LINE, "--list", f"{path}: no such file or folder")
    known = _known_formats()
    if spec.format not in known:
        raise ConfigError(COMMAND_LINE, "--list", f'unknown format "{spec.format}"')
    return ListConfig(path=str(path), format=spec.format, category=spec.category)

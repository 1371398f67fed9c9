"""Reading the file: TOML, the declared tables, each section's build, command-line
overrides, and the one-line errors that name the file and the key.

msgspec checks the file against `ConfigTable` in one pass; its errors are translated here
from the failing key's declared type (never shown as msgspec's own wording), so every kind
of mistake reads the same: `config.toml: cache.max_entries: must be >= 1, got 0`.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

from fdconfig import (
    access,
    admin,
    blocking,
    blockpage,
    cache,
    console,
    dnstap,
    forward,
    leads,
    local,
    log,
    metrics,
    observed,
    policies,
    querylog,
    ratelimit,
    reports,
    server,
    subscribers,
    tls,
    upstream,
)
from fdconfig import lists as lists_mod
from fdconfig.blocking import BLOCK_MODES, check_ip_mode
from fdconfig.config import Config, ConfigTable
from fdconfig.fields import (
    COMMAND_LINE,
    Address,
    ConfigError,
    Table,
    Where,
    choices,
    parse_address,
)
from fdconfig.lists import ListConfig, ListTable
from fdconfig.metrics import MetricsConfig
from fdconfig.server import check_ports, default_data_dir
from fdconfig.tls import TlsConfig
from fdconfig.upstream import (
    DEFAULT_RESOLV_CONF,
    is_ourselves,
    parse_server,
    upstreams_from_resolv_conf,
)

S = TypeVar("S", bound=Table)
P = TypeVar("P")
DEFAULT_SOURCE = "<default>"


def load_config(
    path: str | os.PathLike[str],
    *,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
    data_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
) -> Config:
    """Read and validate a TOML config file.

    Relative paths inside it (lists, the query log, data_dir) are relative to the file's
    folder, so a config works whatever the current directory of the daemon. A config file
    without `[[lists]]` filters nothing: the bundled lists are the no-config default only.
    `data_dir` (the `--data-dir` flag, relative to the current directory) replaces
    `server.data_dir`; `offline` (the `--offline` flag) sets `server.offline`.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    p = Path(path)
    return _build(str(p), read_toml(p), p.parent.resolve(), resolv_conf, data_dir, offline)


def default_config(
    *,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
    lists_file: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
) -> Config:
    """The embedded configuration `filterdns serve` runs without `--config`.

    127.0.0.1:5353, upstreams from resolv.conf minus ourselves, the bundled lists plus the
    large UT1 categories by URL (`downloads.toml`; `offline`: never downloaded), state in
    `data_dir` (default `default_data_dir()`), metrics on 127.0.0.1:9153; everything else at
    its documented default.
    """
    root = Path(data_dir).resolve() if data_dir is not None else default_data_dir()
    downloads = Path(lists_file).with_name(DOWNLOADS_FILE) if lists_file is not None else None

    def lists() -> tuple[ListConfig, ...]:
        return load_bundled_lists(lists_file) + load_default_sources(root, downloads)

    return _build(
        DEFAULT_SOURCE,
        {},
        Path.cwd(),
        resolv_conf,
        root,
        offline,
        default_lists=lists,
    )


def _build(
    file: str,
    data: dict[str, Any],
    base: Path,
    resolv_conf: str,
    data_dir: str | os.PathLike[str] | None,
    offline: bool = False,
    default_lists: Callable[[], tuple[ListConfig, ...]] | None = None,
) -> Config:
    table = decode(file, data, ConfigTable)
    srv = server.build(table.server, Where(file, base, base))
    if data_dir is not None:
        srv = replace(srv, data_dir=str(Path(data_dir).resolve()))
    if offline:
        srv = replace(srv, offline=True)
    where = Where(file, base, base / srv.data_dir if srv.data_dir else base)
    if "lists" in data:
        lists = lists_mod.build(list(table.lists), where)
    else:
        lists = default_lists() if default_lists else ()
    blocks = blocking.build(table.blocking, where)
    adm = admin.build(table.admin, where)
    loc = local.build(table.local, where)
    pols = policies.build(table.policies, table.clients, where, blocks, lists, loc.ttl)
    rules = forward.build(
        table.forward, where, srv.listen, [p.name for p in pols.policies]
    )
    ups = upstream.build(table.upstream, where, srv.listen, resolv_conf)
    ups, rules = forward.take_default(rules, ups, table.upstream.servers, where)
    qlog = querylog.build(table.querylog, where)
    subs = subscribers.build(table.subscribers, where)
    return Config(
        server=srv,
        upstream=ups,
        cache=cache.build(table.cache, where),
        blocking=blocks,
        access=access.build(table.access, where),
        metrics=metrics.build(table.metrics, where),
        querylog=qlog,
        logging=log.build(table.logging, where),
        admin=adm,
        reports=reports.build(table.reports, where, adm),
        lists=lists,
        policy=pols,
        blockpage=blockpage.build(table.blockpage, where),
        forward=rules,
        local=loc,
        ratelimit=ratelimit.build(table.ratelimit, where),
        dnstap=dnstap.build(table.dnstap, where),
        observed=observed.build(table.observed, where),
        leads=leads.build(table.leads, where),
        console=console.build(table.console, where, qlog),
        subscribers=subs,
        radius=subscribers.build_radius(table.radius, where, subs),
        tls=tls.build(table.tls, where),
        source=file if file != DEFAULT_SOURCE else None,
    )


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at `path`; a ConfigError naming the file if it cannot be read."""
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


class _ListsFile(Table):
    """A bundled `lists.toml`: only `[[lists]]`."""

    lists: tuple[ListTable, ...] = ()


def load_bundled_lists(path: str | os.PathLike[str] | None = None) -> tuple[ListConfig, ...]:
    """The bundled lists: `[[lists]]` entries of `lists.toml`, paths relative to it."""
    p = Path(path) if path is not None else bundled_lists_file()
    table = decode(str(p), read_toml(p), _ListsFile)
    base = p.parent.resolve()
    return lists_mod.build(list(table.lists), Where(str(p), base, base))


UT1_DOWNLOADS = "https://dsi.ut-capitole.fr/blacklists/download/"
"""UT1's per-category archives; `FILTERDNS_UT1_BASE_URL` replaces this prefix (tests)."""
DOWNLOADS_FILE = "downloads.toml"


def load_default_sources(
    data_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> tuple[ListConfig, ...]:
    """The embedded default's lists given by URL (`downloads.toml` beside the bundled
    `lists.toml`; none if that file is absent), their copies kept under `data_dir`."""
    p = Path(path) if path is not None else bundled_lists_file().with_name(DOWNLOADS_FILE)
    if not p.is_file():
        return ()
    table = decode(str(p), read_toml(p), _ListsFile)
    base_url = os.environ.get("FILTERDNS_UT1_BASE_URL", "").rstrip("/")
    entries = [
        msgspec.structs.replace(t, url=base_url + "/" + t.url.removeprefix(UT1_DOWNLOADS))
        if base_url and isinstance(t.url, str) and t.url.startswith(UT1_DOWNLOADS)
        else t
        for t in table.lists
    ]
    return lists_mod.build(entries, Where(str(p), p.parent.resolve(), Path(data_dir)))


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


def apply_overrides(
    config: Config,
    *,
    listen: Sequence[str] = (),
    upstream: Sequence[str] = (),
    lists: Sequence[str] = (),
    block_mode: str | None = None,
    metrics_listen: str | None = None,
    listen_tls: Sequence[str] = (),
    listen_https: Sequence[str] = (),
    listen_quic: Sequence[str] = (),
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Config:
    """Apply the `serve` flags. A repeatable flag, when given, replaces the config's value.

    `lists` items are `PATH[:CATEGORY[:FORMAT]]`, `tls_cert` and `tls_key` PEM files, all
    relative to the current directory.
    `metrics_listen=""` disables metrics. (`--data-dir` is applied by `load_config`, which
    still knows the relative paths it anchors.)

    Raises:
        ConfigError: with path "command line" and the flag as the key.
    """
    srv, ups, blocks, mets = config.server, config.upstream, config.blocking, config.metrics
    if listen:
        parsed = _flag_list("--listen", listen, parse_address)
        srv = replace(srv, listen=tuple(dict.fromkeys(parsed)))
    encrypted = {"listen_tls": listen_tls, "listen_https": listen_https, "listen_quic": listen_quic}
    addresses: dict[str, Any] = {
        key: tuple(dict.fromkeys(_flag_list(_FLAGS[key], items, parse_address)))
        for key, items in encrypted.items()
        if items
    }
    srv = replace(srv, **addresses)
    if listen or any(encrypted.values()):
        check_ports(srv, COMMAND_LINE, _FLAGS)
    tls_config = _tls_flags(config.tls, tls_cert, tls_key)
    if upstream:
        servers = _flag_list("--upstream", upstream, parse_server)
        for item in servers:
            if isinstance(item, Address) and is_ourselves(item, srv.listen):
                raise ConfigError(
                    COMMAND_LINE, "--upstream", f"{item} is one of our own listen addresses"
                )
        ups = replace(ups, servers=tuple(dict.fromkeys(servers)), from_resolv_conf=False)
    elif listen and ups.from_resolv_conf:
        ups = replace(ups, servers=upstreams_from_resolv_conf(ups.resolv_conf, srv.listen))
    new_lists = tuple(lists_mod.from_flag(text) for text in lists) if lists else config.lists
    if block_mode is not None:
        if block_mode not in BLOCK_MODES:
            raise ConfigError(
                COMMAND_LINE, "--block-mode", f'must be {choices(BLOCK_MODES)}, got "{block_mode}"'
            )
        blocks = replace(blocks, mode=block_mode)
        check_ip_mode(blocks, COMMAND_LINE, "--block-mode")
    if metrics_listen is not None:
        try:
            addr = parse_address(metrics_listen) if metrics_listen.strip() else None
        except ValueError as e:
            raise ConfigError(COMMAND_LINE, "--metrics-listen", str(e)) from None
        mets = MetricsConfig(listen=addr)
    return replace(
        config,
        server=srv,
        upstream=ups,
        blocking=blocks,
        metrics=mets,
        lists=new_lists,
        tls=tls_config,
    )


_FLAGS = {
    "listen": "--listen",
    "listen_tls": "--listen-tls",
    "listen_https": "--listen-https",
    "listen_quic": "--listen-quic",
}


def _tls_flags(config: TlsConfig, cert: str | None, key: str | None) -> TlsConfig:
    """`--tls-cert` and `--tls-key`: both replace the config's pair; one alone replaces its
    half (the other must then come from the file)."""
    if cert is None and key is None:
        return config
    new_cert = config.cert if cert is None else cert
    new_key = config.key if key is None else key
    if not new_cert or not new_key:
        flag = "--tls-key" if new_cert else "--tls-cert"
        raise ConfigError(COMMAND_LINE, flag, "--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", new_cert), ("--tls-key", new_key)):
        if not Path(path).is_file():
            raise ConfigError(COMMAND_LINE, flag, f"{path} is not a file")
    return replace(config, cert=str(Path(new_cert).resolve()), key=str(Path(new_key).resolve()))


def _flag_list(flag: str, items: Sequence[str], parse: Callable[[str], P]) -> list[P]:
    out = []
    for item in items:
        try:
            out.append(parse(item))
        except ValueError as e:
            raise ConfigError(COMMAND_LINE, flag, str(e)) from None
    return out


# --- checking the file against the declared tables ----------------------------------------


def decode(file: str, data: dict[str, Any], kind: type[S]) -> S:
    """`data` as the declared table `kind`, or a ConfigError naming the first bad key."""
    _check_finite(file, data, "")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as e:
        raise _translate(file, data, kind, str(e)) from None


def _check_finite(file: str, value: object, key: str) -> None:
    """No key takes an infinite or NaN number (TOML has `inf` and `nan`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(file, key, f"must be a finite number, got {value}")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(file, item, f"{key}.{name}" if key else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(file, item, f"{key}[{i}]")


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>.*)`)?$")
_STEP = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_FIELD = re.compile(r"^Object (contains unknown|missing required) field `(.+)`$")


def _translate(file: str, data: Any, kind: type, text: str) -> ConfigError:
    m = _AT.match(text)
    assert m is not None  # the pattern matches any text
    steps: list[str | int] = [
        name if name else int(index) if index != "..." else "..."
        for name, index in _STEP.findall(m.group("path") or "")
    ]
    if "..." in steps:
        # A table of tables (`[policies.NAME]`): msgspec does not say which NAME; check them
        # one by one to name it.
        at = steps.index("...")
        parent: Any = data
        for step in steps[:at]:
            parent = parent[step]
        info = _type_at(mi.type_info(kind), steps[:at])
        assert isinstance(info, mi.DictType)
        item_kind = info.value_type.cls  # type: ignore[attr-defined]
        prefix = _key(steps[:at])
        for name, item in parent.items():
            try:
                msgspec.convert(item, item_kind)
            except msgspec.ValidationError as e:
                err = _translate(file, item, item_kind, str(e))
                return ConfigError(file, f"{prefix}.{name}.{err.key}".rstrip("."), err.message)
        raise AssertionError(text)  # pragma: no cover - msgspec failed on one of them
    key = _key(steps)
    if field := _FIELD.match(m.group("what")):
        unknown, name = field.group(1) == "contains unknown", field.group(2)
        return ConfigError(
            file, f"{key}.{name}" if key else name, "unknown key" if unknown else "is required"
        )
    value: Any = data
    for step in steps:
        value = value[step]
    return ConfigError(file, key, _explain(_type_at(mi.type_info(kind), steps), value))


def _key(steps: Sequence[str | int]) -> str:
    key = ""
    for step in steps:
        key += f"[{step}]" if isinstance(step, int) else f".{step}" if key else str(step)
    return key


def _plain(info: mi.Type) -> mi.Type:
    """The type without its metadata (msgspec already leaves UNSET out of unions)."""
    while isinstance(info, mi.Metadata):
        info = info.type
    return info


def _type_at(info: mi.Type, steps: Sequence[str | int]) -> mi.Type:
    field: tuple[type, str] | None = None
    for step in steps:
        info = _plain(info)
        if isinstance(info, mi.StructType):
            field = (info.cls, str(step))
            info = next(f.type for f in info.fields if f.name == step)
        elif isinstance(info, mi.ListType | mi.VarTupleType):
            info = info.item_type
        elif isinstance(info, mi.DictType):
            info = info.value_type
    info = _plain(info)
    if isinstance(info, mi.LiteralType) and field is not None:
        # msgspec sorts a Literal's values; the message lists them as declared.
        declared = _literal_values(typing.get_type_hints(field[0], include_extras=True)[field[1]])
        if set(declared) == set(info.values):
            info = mi.LiteralType(tuple(declared))
    return info


def _literal_values(hint: Any) -> list[Any]:
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    return [v for arg in typing.get_args(hint) for v in _literal_values(arg)]


_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _tname(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _NAMES.get(type(value), type(value).__name__)


def _expect(info: mi.Type) -> str:
    """What a value of `info` must be, as the end of `must be ...`."""
    if isinstance(info, mi.LiteralType):
        return choices([str(v) for v in info.values])
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else None if info.gt is None else info.gt + 1
        if low is not None and info.le is not None:
            return f"an integer between {low} and {info.le}"
        return "an integer"
    if isinstance(info, mi.FloatType):
        return "a number"
    if isinstance(info, mi.StrType):
        return "a string"
    if isinstance(info, mi.BoolType):
        return "a boolean"
    if isinstance(info, mi.ListType | mi.VarTupleType):
        item = _plain(info.item_type)
        return "an array of tables" if isinstance(item, mi.StructType) else "an array"
    if isinstance(info, mi.StructType | mi.DictType):
        return "a table"
    if isinstance(info, mi.UnionType):
        return " or ".join(_expect(_plain(t)) for t in info.types)
    return str(info)  # pragma: no cover - every declared type is named above


def _explain(info: mi.Type, value: Any) -> str:
    """Why `value` is not a valid `info`, as a config error message."""
    got = f"got {_tname(value)}"
    if isinstance(info, mi.LiteralType):
        shown = f'"{value}"' if isinstance(value, str) else _tname(value)
        return f"must be {_expect(info)}, got {shown}"
    if isinstance(info, mi.IntType):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, {got}"
        low = info.ge if info.ge is not None else None if info.gt is None else info.gt + 1
        if low is not None and info.le is not None:
            return f"must be between {low} and {info.le}, got {value}"
        if low is not None and value < low:
            return f"must be >= {low}, got {value}"
        return f"must be <= {info.le}, got {value}"
    if isinstance(info, mi.FloatType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, {got}"
        if info.ge is not None and info.le is not None:
            return f"must be between {info.ge:g} and {info.le:g}, got {value}"
        if info.gt == 0 and value <= 0:
            return f"must be a positive number, got {value}"
        if info.le is not None and value > info.le:
            return f"must be at most {info.le}, got {value}"
        return f"must be a number within its bounds, got {value}"  # pragma: no cover
    if isinstance(info, mi.StrType):
        return f"must be a string, {got}" if not isinstance(value, str) else "must not be empty"
    if isinstance(info, mi.ListType | mi.VarTupleType):
        if not isinstance(value, list):
            return f"must be {_expect(info)}, {got}"
        return "must hold at least one item"
    if isinstance(info, mi.UnionType):
        for member in info.types:
            member = _plain(member)
            if isinstance(member, mi.IntType) and type(value) is int:
                return _explain(member, value)
        shown = f'"{value}"' if isinstance(value, str) else got.removeprefix("got ")
        return f"must be {_expect(info)}, got {shown}"
    return f"must be {_expect(info)}, {got}"

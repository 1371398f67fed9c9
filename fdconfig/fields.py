"""What every section shares: the error type, the field types (addresses, ports, CIDRs,
durations, choices) and the base of the declared file tables.

A section declares its TOML table as a `Table` (a msgspec Struct: types, ranges, choices,
defaults and a description per key, unknown keys rejected); msgspec checks the shape, and the
section's `build` turns the checked table into the frozen dataclass the server reads, parsing
what a type cannot say (an address, a CIDR, a file that must exist).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import msgspec

COMMAND_LINE = "command line"
"""The `ConfigError.path` of errors in command-line flags (there is no file to name)."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")
D = TypeVar("D")


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


class Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The base of every declared TOML table: a key nobody declared is an error."""


def doc(description: str, **constraints: Any) -> msgspec.Meta:
    """A key's description (shown by editors and in docs/configuration.md) and its bounds.

    `default_text` documents a default that depends on other keys (the key is then UNSET
    when absent); `default` puts a fixed default in the schema for such a key.
    """
    schema: dict[str, Any] = {}
    if "default_text" in constraints:
        schema["x-default"] = constraints.pop("default_text")
    if "default" in constraints:
        schema["default"] = constraints.pop("default")
    return msgspec.Meta(description=description, extra_json_schema=schema or None, **constraints)


@dataclass(frozen=True)
class Where:
    """The file being loaded and the folders its relative paths resolve against."""

    file: str
    base: Path  # the config file's folder
    data_dir: Path  # base / server.data_dir

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, key, message)

    def each(self, key: str, items: Iterable[str], parse: Callable[[str], T]) -> tuple[T, ...]:
        """`parse` each string of the array `key`; a ValueError names the item's index."""
        out = []
        for i, item in enumerate(items):
            try:
                out.append(parse(item))
            except ValueError as e:
                raise self.error(f"{key}[{i}]", str(e)) from None
        return tuple(out)

    def one(self, key: str, text: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise self.error(key, str(e)) from None


def fill(cls: type[D], table: Table, **parsed: Any) -> D:
    """A section's dataclass from its checked `table`: the keys both declare are copied, and
    `parsed` gives the rest (what a type cannot say: addresses, CIDRs, resolved paths)."""
    names = {f.name for f in dataclasses.fields(cls)} & set(table.__struct_fields__)  # type: ignore[arg-type]
    return cls(**{name: getattr(table, name) for name in names - parsed.keys()}, **parsed)


def choices(values: Sequence[str]) -> str:
    """`"a" or "b"` / `"a", "b" or "c"`: the wording of every choice error."""
    quoted = [f'"{v}"' for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


# --- addresses and networks ---------------------------------------------------------------


class Address(NamedTuple):
    """An IP literal and a port. `str()` gives the `ADDR:PORT` / `[v6]:PORT` form."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


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


def optional_address(text: str) -> Address | None:
    """An `ADDR:PORT` key where "" means none (a listener that is off)."""
    return parse_address(text) if text.strip() else None


def parse_network(text: str) -> IPNetwork:
    """A CIDR; a bare address is its /32 or /128."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR (like 10.0.0.0/8 or fc00::/7)") from None


def ip_of_version(version: int) -> Callable[[str], str]:
    """A parser of an IPv4 (or IPv6) literal; "" stays "" (none)."""

    def parse(text: str) -> str:
        value = text.strip()
        if not value:
            return ""
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            ip = None
        if ip is None or ip.version != version:
            raise ValueError(f'"{value}" is not an IPv{version} address')
        return str(ip)

    return parse


def http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError(f'"{text}" is not an http:// or https:// URL')
    return text


# --- durations ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string like `"90"`, `"30m"`, `"6h"`, `"1d"`, `"1w"`.

    Raises:
        ValueError: not a positive duration.
    """
    if isinstance(value, bool):
        raise ValueError('must be a number of seconds or a duration like "6h", got a boolean')
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f'must be seconds or a duration like "30m", "6h", "1d", got "{value}"')
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds

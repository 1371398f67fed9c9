"""`[upstream]`: where cache misses are forwarded."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from fdconfig.fields import Address, Table, Where, doc, fill, parse_address, parse_duration

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
Strategy = Literal["failover", "parallel"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


DOT_PORT = 853


@dataclass(frozen=True)
class DotServer:
    """A DNS-over-TLS upstream: `tls://ADDR[:PORT]#SERVER-NAME`.

    `server_name` is the name the certificate must be valid for; "" when the URL names
    none, and then the certificate must be valid for the IP address itself.
    """

    address: Address
    server_name: str = ""

    def __str__(self) -> str:
        tail = f"#{self.server_name}" if self.server_name else ""
        return f"tls://{self.address}{tail}"


@dataclass(frozen=True)
class DohServer:
    """A DNS-over-HTTPS upstream: `https://HOST[:PORT]/PATH`; `host` is a name (resolved
    through `[upstream] bootstrap`) or an IP literal."""

    url: str
    host: str
    port: int

    @property
    def ip(self) -> str | None:
        """The host when it is an IP literal (no bootstrap needed), else None."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None

    def __str__(self) -> str:
        return self.url


Server = Address | DotServer | DohServer


def parse_server(text: str) -> Server:
    """An `[upstream] servers` entry: `ADDR[:PORT]`, `tls://ADDR[:PORT]#NAME` or
    `https://HOST[:PORT]/PATH`.

    Raises:
        ValueError: with a message suitable for a `ConfigError`.
    """
    text = text.strip()
    if text.startswith("tls://"):
        rest, _, name = text[len("tls://") :].partition("#")
        name = name.strip().rstrip(".").lower()
        if "#" in text and not name:
            raise ValueError(f"{text!r}: empty server name after '#'")
        try:
            address = parse_address(rest, default_port=DOT_PORT)
        except ValueError as e:
            raise ValueError(f"{text!r}: {e} (tls://ADDR[:PORT]#SERVER-NAME)") from None
        return DotServer(address, name)
    if text.startswith("https://"):
        try:
            parts = urlsplit(text)
            port = parts.port or 443
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from None
        if not parts.hostname:
            raise ValueError(f"{text!r}: no host in the URL")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"{text!r}: a DoH URL is https://HOST[:PORT]/PATH, nothing more")
        return DohServer(text, parts.hostname, port)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(f"{text!r}: unknown scheme {scheme!r} (use tls:// or https://)")
    return parse_address(text, default_port=53)


class UpstreamTable(Table):
    """Where cache misses are forwarded."""

    servers: Annotated[
        tuple[str, ...],
        doc(
            "Upstream resolvers: `ADDR[:PORT]` (plain DNS), `tls://ADDR[:PORT]#SERVER-NAME` "
            "(DNS over TLS, port 853 by default) or `https://HOST[:PORT]/PATH` (DNS over "
            "HTTPS). Encrypted upstreams' certificates are verified for the server name (the "
            "DoH host; the address when a `tls://` entry names none); a failure is an "
            "upstream error, never a fallback to plain DNS. Empty: the `nameserver` lines of "
            "`/etc/resolv.conf`, minus any that is one of our own listen addresses (also a "
            "loopback address when we listen on the wildcard address at the same port). An "
            "upstream equal to a listen address is an error."
        ),
    ] = ()
    strategy: Annotated[
        Strategy,
        doc(
            '`"failover"`: ask the healthy upstreams in order; `"parallel"`: ask all healthy '
            "upstreams at once and use the first good answer."
        ),
    ] = "failover"
    timeout: Annotated[
        float, doc("Seconds to wait for one upstream attempt (at most 60).", gt=0, le=60)
    ] = 2.0
    max_failures: Annotated[
        int,
        doc(
            "Consecutive failures (timeouts, errors, spoofed or garbage replies) before an "
            "upstream is marked dead and skipped.",
            ge=1,
        ),
    ] = 3
    retry_dead_after: Annotated[
        float, doc("Seconds a dead upstream is skipped before it is tried again.", gt=0)
    ] = 30.0
    bootstrap: Annotated[
        tuple[str, ...],
        doc(
            "Plain DNS servers, `ADDR[:PORT]`, that resolve the host names of `https://` "
            "upstreams (never filterdns itself). Needed only when a DoH host is a name."
        ),
    ] = ()
    ca_file: Annotated[
        str,
        doc(
            "PEM file of the CA certificates that encrypted upstreams' certificates must "
            "chain to, relative to the config file. Empty: the system's CAs."
        ),
    ] = ""
    idle_timeout: Annotated[
        float | str,
        doc(
            'Seconds (or a duration like "2m") after which an idle connection to an '
            "encrypted upstream is closed; the next query opens a new one."
        ),
    ] = 30.0


@dataclass(frozen=True)
class UpstreamConfig:
    """Where cache misses are forwarded.

    `from_resolv_conf` is true when `servers` was not configured and came from `resolv_conf`;
    `apply_overrides` then recomputes it when `--listen` changes what "ourselves" means.
    """

    servers: tuple[Server, ...] = ()
    strategy: str = "failover"
    timeout: float = 2.0
    retry_dead_after: float = 30.0
    max_failures: int = 3
    bootstrap: tuple[Address, ...] = ()
    ca_file: str = ""
    idle_timeout: float = 30.0
    from_resolv_conf: bool = False
    resolv_conf: str = DEFAULT_RESOLV_CONF

    @property
    def encrypted(self) -> bool:
        """True when some upstream is reached over TLS or HTTPS."""
        return any(not isinstance(s, Address) for s in self.servers)


def build(
    table: UpstreamTable, where: Where, listen: Sequence[Address], resolv_conf: str
) -> UpstreamConfig:
    servers: tuple[Server, ...] = where.each("upstream.servers", table.servers, parse_server)
    for i, server in enumerate(servers):
        if isinstance(server, Address) and is_ourselves(server, listen):
            raise where.error(
                f"upstream.servers[{i}]", f"{server} is one of our own listen addresses"
            )
    bootstrap = where.each(
        "upstream.bootstrap", table.bootstrap, lambda t: parse_address(t, default_port=53)
    )
    for i, server in enumerate(bootstrap):
        if is_ourselves(server, listen):
            raise where.error(
                f"upstream.bootstrap[{i}]", f"{server} is one of our own listen addresses"
            )
    for i, server in enumerate(servers):
        if isinstance(server, DohServer) and server.ip is None and not bootstrap:
            raise where.error(
                f"upstream.servers[{i}]",
                f"{server.host!r} is a name: set upstream.bootstrap to resolve it",
            )
    ca_file = ""
    if table.ca_file:
        ca_path = where.base / Path(table.ca_file).expanduser()
        if not ca_path.is_file():
            raise where.error("upstream.ca_file", f"{ca_path} is not a file")
        ca_file = str(ca_path)
    idle = table.idle_timeout
    idle_timeout = where.one("upstream.idle_timeout", idle, parse_duration)  # type: ignore[arg-type]
    from_resolv = not servers
    if from_resolv:
        servers = upstreams_from_resolv_conf(resolv_conf, listen)
    return fill(
        UpstreamConfig,
        table,
        servers=tuple(dict.fromkeys(servers)),
        bootstrap=tuple(dict.fromkeys(bootstrap)),
        ca_file=ca_file,
        idle_timeout=idle_timeout,
        from_resolv_conf=from_resolv,
        resolv_conf=resolv_conf,
    )


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


def is_ourselves(server: Address, listen: Iterable[Address]) -> bool:
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


def upstreams_from_resolv_conf(path: str, listen: Sequence[Address]) -> tuple[Address, ...]:
    servers = (Address(ns, 53) for ns in read_resolv_conf(path))
    return tuple(s for s in servers if not is_ourselves(s, listen))

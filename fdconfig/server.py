"""`[server]`: where and how clients are served."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from fdconfig.fields import (
    Address,
    ConfigError,
    IPNetwork,
    Table,
    Where,
    doc,
    fill,
    parse_address,
    parse_network,
)

MAX_WORKERS = 256


class ServerTable(Table):
    """Where and how clients are served."""

    listen: Annotated[
        tuple[str, ...],
        doc(
            "Addresses to serve, UDP and TCP on each. Port 53 needs root or "
            "`CAP_NET_BIND_SERVICE` (`setcap cap_net_bind_service=+ep` on the Python binary, "
            "or `AmbientCapabilities=CAP_NET_BIND_SERVICE` in a systemd unit with `User=` set "
            "to an unprivileged account).",
            min_length=1,
        ),
    ] = ("127.0.0.1:5353",)
    udp_payload_size: Annotated[
        int,
        doc(
            "The EDNS UDP payload size we accept and advertise (512..65535). Answers larger "
            "than the client's (and this) limit are truncated with TC set, so the client "
            "retries over TCP. 1232 avoids IP fragmentation (DNS Flag Day 2020).",
            ge=512,
            le=65535,
        ),
    ] = 1232
    tcp_idle_timeout: Annotated[
        float, doc("Seconds an idle client TCP connection is kept open.", gt=0)
    ] = 10.0
    tcp_max_connections: Annotated[
        int,
        doc(
            "Open client TCP connections per listening address (with the fast path); a "
            "connection beyond is closed at once.",
            ge=1,
            le=1_000_000,
        ),
    ] = 4096
    tcp_max_inflight: Annotated[
        int,
        doc(
            "Queries per client TCP connection waiting for the upstream at once (with the "
            "fast path; without, 32); the connection's further queries wait until one is "
            "answered.",
            ge=1,
            le=65535,
        ),
    ] = 32
    data_dir: Annotated[
        str,
        doc(
            "Folder for state files: the query log's relative path is resolved in it, and it "
            "holds the downloaded list sources (`sources/`), the compiled snapshot "
            "(`lists.snap`) and the audit trail (`audit.jsonl`). Empty: the config file's "
            "folder (the embedded default, without `--config`: `$STATE_DIRECTORY` under systemd, "
            "else `$XDG_DATA_HOME/filterdns`, else `~/.local/share/filterdns`). "
            "`filterdns serve --data-dir DIR` overrides it."
        ),
    ] = ""
    workers: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)] | Literal["auto"],
        doc(
            "Processes serving the same addresses (`SO_REUSEPORT`: the kernel spreads clients "
            'across them), `1`..`256` or `"auto"` (one per CPU the process may run on). Each '
            "worker has its own cache; all of them map one compiled list snapshot, so N "
            "workers hold one copy of the lists. The parent process compiles the lists, "
            "serves `/metrics` (the workers' figures added up), writes the subscribers' "
            "table and hears RADIUS, and passes SIGHUP (reload) and SIGTERM on. Worker 0 "
            "serves the admin listener: the console, the review pages and the provisioning "
            "API. See [resolver-fastpath.md](resolver-fastpath.md)."
        ),
    ] = 1
    fast_path: Annotated[
        bool,
        doc(
            "Serve UDP and TCP through the C fast path (batched `recvmmsg`/`sendmmsg`, an "
            "epoll loop for TCP connections; cache hits and blocks answered without Python) "
            "when the extension is built; `false` uses the plain asyncio listeners. Answers "
            "are the same either way."
        ),
    ] = True
    offline: Annotated[
        bool,
        doc(
            "Download no list: lists given by URL serve the copy already in `data_dir` "
            "(none: left out), neither at start, on their `refresh` timer, on SIGHUP nor in "
            "`filterdns lists update`. `serve --offline` sets it."
        ),
    ] = False
    listen_tls: Annotated[
        tuple[str, ...],
        doc(
            "Addresses to serve DNS over TLS on (RFC 7858, usually port 853), `ADDR:PORT`. "
            "Certificate and limits: `[tls]`. See [encrypted-dns.md](encrypted-dns.md)."
        ),
    ] = ()
    listen_https: Annotated[
        tuple[str, ...],
        doc(
            "Addresses to serve DNS over HTTPS on (RFC 8484, `/dns-query`, HTTP/2 and "
            "HTTP/1.1; usually port 443), `ADDR:PORT`."
        ),
    ] = ()
    listen_quic: Annotated[
        tuple[str, ...],
        doc("Addresses to serve DNS over QUIC on (RFC 9250, UDP, usually port 853), `ADDR:PORT`."),
    ] = ()
    trusted_proxies: Annotated[
        tuple[str, ...],
        doc(
            "CIDRs of load balancers allowed to open TCP, DoT and DoH connections with a "
            "PROXY protocol header (v2 or v1) naming the real client address. A header from "
            "any other address closes the connection."
        ),
    ] = ()
    proxy_required: Annotated[
        bool,
        doc(
            "Connections from `trusted_proxies` must start with a PROXY header; a bare "
            "connection from such an address is closed. `false`: a bare connection is served "
            "as the proxy's own."
        ),
    ] = False


@dataclass(frozen=True)
class ServerConfig:
    """Where and how clients are served."""

    listen: tuple[Address, ...] = (Address("127.0.0.1", 5353),)
    udp_payload_size: int = 1232
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 4096  # per listener, in the C stream loop
    tcp_max_inflight: int = 32  # queries in Python per TCP connection
    data_dir: str = ""
    workers: int = 1  # processes sharing the port (SO_REUSEPORT); "auto" = usable CPUs
    fast_path: bool = True  # the C UDP fast path (dns_resolver/fast/fastpath.py) when built
    offline: bool = False  # never download lists: URL sources serve their cached copy only
    listen_tls: tuple[Address, ...] = ()
    listen_https: tuple[Address, ...] = ()
    listen_quic: tuple[Address, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    proxy_required: bool = False


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


def build(table: ServerTable, where: Where) -> ServerConfig:
    listen = where.each("server.listen", table.listen, parse_address)
    workers = max(1, len(os.sched_getaffinity(0))) if table.workers == "auto" else table.workers
    encrypted = {
        key: tuple(dict.fromkeys(where.each(f"server.{key}", getattr(table, key), parse_address)))
        for key in ENCRYPTED_LISTENERS
    }
    config = fill(
        ServerConfig,
        table,
        listen=tuple(dict.fromkeys(listen)),
        workers=workers,
        trusted_proxies=where.each("server.trusted_proxies", table.trusted_proxies, parse_network),
        **encrypted,
    )
    check_ports(config, where.file)
    return config


ENCRYPTED_LISTENERS = ("listen_tls", "listen_https", "listen_quic")
# Which socket each listener key binds: plain `listen` binds UDP and TCP.
_PROTOCOLS = {"listen": ("udp", "tcp"), "listen_tls": ("tcp",), "listen_https": ("tcp",),
              "listen_quic": ("udp",)}


def check_ports(config: ServerConfig, file: str, flag: dict[str, str] | None = None) -> None:
    """No two listeners on one address, port and protocol (DoT and plain TCP on one port,
    say). `flag` names the command-line flag of a key that came from one.

    Raises:
        ConfigError: naming both keys.
    """
    owner: dict[tuple[Address, str], str] = {}
    for key, protocols in _PROTOCOLS.items():
        for address in getattr(config, key):
            for protocol in protocols:
                other = owner.setdefault((address, protocol), key)
                if other != key:
                    name = (flag or {}).get(key, f"server.{key}")
                    raise ConfigError(
                        file, name, f"{address} is also in server.{other} ({protocol})"
                    )

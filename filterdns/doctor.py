"""`filterdns doctor`: one screen of checks that say whether `filterdns serve` will work here.

It checks, in order: the config is valid and names an upstream; each listen address is free
or held by a running filterdns that answers there; each upstream answers a real DNS query
within its timeout; each list is fresh (age and entries; a list given by URL: its copy in
the data directory); the snapshot maps; the data directory is writable; and a port below
1024 can be bound by this user. Each line says `ok` or `PROBLEM` and, for a problem, what to
do about it. Exit status 0 when all is well, 1 when something is not, 2 on a bad command line.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import struct
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_PROBLEM = 0, 1
CAP_NET_BIND_SERVICE = 10  # bit in /proc/self/status CapEff (linux/capability.h)
PROBE_NAME = "example.com"


@dataclass
class Finding:
    """One line of the report: `problem` is None when the check passed."""

    check: str
    detail: str
    problem: str | None = None  # what to do about it

    def line(self) -> str:
        if self.problem is None:
            return f"ok       {self.check}: {self.detail}"
        return f"PROBLEM  {self.check}: {self.detail}; {self.problem}"


def register(subparsers: Any) -> None:
    """Add `doctor` to the `filterdns` sub-commands."""
    parser = subparsers.add_parser(
        "doctor",
        help="check that filterdns can serve here, and say what to fix",
        description="Check the config, the listen ports, the upstreams, the lists, the "
        "snapshot, the data directory and the port privileges, one line each. Exit status: "
        "0 when all is well, 1 when something is not (each problem says what to do).",
    )
    parser.add_argument("--config", metavar="FILE", help="the config to check (default: "
                        "the embedded default `filterdns serve` runs without --config)")
    parser.add_argument("--data-dir", metavar="DIR", help="as `filterdns serve --data-dir`")
    parser.add_argument("--offline", action="store_true", help="as `filterdns serve --offline`")
    parser.add_argument(
        "--probe", metavar="NAME", default=PROBE_NAME,
        help=f"the name each upstream is asked for (default {PROBE_NAME})",
    )
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    findings = list(diagnose(args))
    for finding in findings:
        print(finding.line())
    problems = sum(f.problem is not None for f in findings)
    print(f"{problems} problem{'s' if problems != 1 else ''}" if problems else "all is well")
    return EXIT_PROBLEM if problems else EXIT_OK


def diagnose(args: argparse.Namespace) -> Generator[Finding, None, None]:
    """Every finding, config first; nothing else is checked when the config is invalid."""
    from fdconfig import ConfigError, require_upstreams
    from fdconfig.cli import load_base
    from listsync.update import config_data_dir

    where = args.config or "embedded default"
    try:
        config = load_base(args)
    except (ConfigError, OSError) as exc:
        yield Finding("config", str(exc), "fix the file and key named")
        return
    try:
        require_upstreams(config)
    except ConfigError as exc:
        yield Finding("config", str(exc), "set [upstream] servers")
        return
    yield Finding(
        "config",
        f"{where} is valid ({len(config.lists)} lists, {len(config.server.listen)} listen "
        f"addresses, {len(config.upstream.servers)} upstreams)",
    )
    data_dir = config_data_dir(config)
    yield from _listeners(config)
    yield from _upstreams(config, args.probe)
    yield _data_dir(data_dir)
    entries = yield from _snapshot(config, data_dir)
    yield from _lists(config, entries)


# --- listen addresses -------------------------------------------------------------------


def _listeners(config: Any) -> Iterator[Finding]:
    binds: list[tuple[str, str, int, tuple[str, ...]]] = [
        (str(a), a.host, a.port, ("udp", "tcp")) for a in config.server.listen
    ]
    extra = [
        ("metrics", config.metrics.listen),
        ("block page", config.blockpage.listen if config.blockpage.enabled else None),
        ("admin", config.admin.listen if config.admin.enabled else None),
    ]
    for what, addr in extra:
        if addr is not None:
            binds.append((f"{addr} ({what})", addr.host, addr.port, ("tcp",)))
    for label, host, port, protocols in binds:
        yield _listen_finding(label, host, port, protocols)
    low = sorted({port for _label, _host, port, _p in binds if port < _unprivileged_start()})
    if low and os.geteuid() != 0 and not _has_bind_capability():
        ports = ", ".join(str(p) for p in low)
        yield Finding(
            "privileges",
            f"port {ports} needs CAP_NET_BIND_SERVICE and this user has neither it nor root",
            "run under deploy/systemd/filterdns.service (AmbientCapabilities="
            "CAP_NET_BIND_SERVICE) or `sudo setcap cap_net_bind_service=+ep` on the Python "
            "binary",
        )
    elif low:
        yield Finding("privileges", f"port {low[0]} can be bound (root or CAP_NET_BIND_SERVICE)")


def _listen_finding(label: str, host: str, port: int, protocols: tuple[str, ...]) -> Finding:
    busy = [p for p in protocols if _in_use(host, port, p)]
    if not busy:
        return Finding("listen", f"{label} is free")
    owners = {pid for p in busy for pid in _owners(host, port, p)}
    ours = [pid for pid in owners if _is_filterdns(pid)]
    if ours and (protocols != ("udp", "tcp") or _answers_dns(host, port)):
        return Finding("listen", f"{label} is held by a running filterdns (pid {ours[0]})")
    who = ", ".join(f"pid {pid} ({_cmdline(pid)})" for pid in sorted(owners)) or "another program"
    return Finding(
        "listen",
        f"{label} is in use ({'/'.join(busy)}) by {who}",
        "stop that program or listen elsewhere (server.listen, --listen)",
    )


def _in_use(host: str, port: int, protocol: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            # EACCES: a low port without the privilege; the privileges line says so.
            return exc.errno == errno.EADDRINUSE
    return False


def _owners(host: str, port: int, protocol: str) -> set[int]:
    """The pids holding a socket bound to host:port (those this user may inspect)."""
    v6 = ":" in host
    table = Path(f"/proc/net/{protocol}{'6' if v6 else ''}")
    inodes = set()
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return set()
    for line in lines:
        fields = line.split()
        local_hex, port_hex = fields[1].split(":")
        if int(port_hex, 16) != port:
            continue
        local = _proc_address(local_hex)
        if local in (host, "0.0.0.0", "::"):
            inodes.add(fields[9])
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(int(fd_dir.parent.name))
                    break
        except OSError:
            continue  # gone, or not ours to read
    return pids


def _proc_address(text: str) -> str:
    """An address of /proc/net/{udp,tcp}[6]: 32-bit words in host byte order, as hex."""
    raw = bytes.fromhex(text)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    packed = b"".join(struct.pack("=I", struct.unpack(">I", w)[0]) for w in words)
    family = socket.AF_INET6 if len(packed) == 16 else socket.AF_INET
    return socket.inet_ntop(family, packed)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:80]


def _is_filterdns(pid: int) -> bool:
    return "filterdns" in _cmdline(pid).split(" serve")[0]


def _answers_dns(host: str, port: int) -> bool:
    """A bare header (no question) is answered by any DNS server itself: FORMERR."""
    header = struct.pack("!HHHHHH", 0x4444, 0, 0, 0, 0, 0)
    return _exchange(host, port, header, 1.0) is not None


def _unprivileged_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def _has_bind_capability() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except (OSError, ValueError):
        pass
    return False


# --- upstreams --------------------------------------------------------------------------


def _exchange(host: str, port: int, message: bytes, timeout: float) -> bytes | None:
    """Send one UDP DNS message; the reply with the same ID, or None (no answer)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.send(message)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                reply = sock.recv(65535)
                if reply[:2] == message[:2]:
                    return reply
        except OSError:
            return None  # timed out, or refused (ICMP port unreachable)
    return None


def _upstreams(config: Any, name: str) -> Iterator[Finding]:
    from dnslib import RCODE, DNSRecord

    timeout = config.upstream.timeout
    for server in config.upstream.servers:
        query = DNSRecord.question(name, "A")
        started = time.monotonic()
        raw = _exchange(server.host, server.port, query.pack(), timeout)
        if raw is None:
            yield Finding(
                "upstream",
                f"{server} did not answer {name} within {timeout:g} s",
                "check that it runs and that this host may query it, or change "
                "[upstream] servers (--upstream)",
            )
            continue
        ms = (time.monotonic() - started) * 1000
        rcode = RCODE.get(DNSRecord.parse(raw).header.rcode)
        if rcode in ("REFUSED", "SERVFAIL"):
            yield Finding(
                "upstream",
                f"{server} answered {name} with {rcode}",
                "it does not resolve for this host: allow it there, or change "
                "[upstream] servers",
            )
        else:
            answers = len(DNSRecord.parse(raw).rr)
            yield Finding(
                "upstream", f"{server} answers ({name} A: {rcode}, {answers} records, {ms:.0f} ms)"
            )


# --- data directory, snapshot, lists ----------------------------------------------------


def _data_dir(data_dir: Path) -> Finding:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Finding(
            "data dir",
            f"{data_dir} is not writable: {exc.strerror or exc}",
            "create it for the user filterdns runs as, or choose another "
            "(server.data_dir, --data-dir)",
        )
    return Finding("data dir", f"{data_dir} is writable")


def _snapshot(config: Any, data_dir: Path) -> Generator[Finding, None, dict[str, int]]:
    """The snapshot check; returns the entries per list it holds ({} without one)."""
    from filtercore import Matcher
    from listsync.update import snapshot_is_current, snapshot_path

    if not config.server.data_dir:
        yield Finding("snapshot", "none: without server.data_dir the lists compile in memory")
        return {}
    path = snapshot_path(data_dir)
    if not path.exists():
        yield Finding("snapshot", f"{path} not built yet (`filterdns serve` builds it at start)")
        return {}
    try:
        matcher = Matcher.from_snapshot(str(path), verify=True)
    except Exception as exc:
        yield Finding(
            "snapshot",
            f"{path} does not map: {exc}",
            "delete it; `filterdns lists update` or the next start builds a new one",
        )
        return {}
    stats: dict[str, Any] = matcher.stats()
    age = _age(time.time() - path.stat().st_mtime)
    stale = (
        ""
        if snapshot_is_current(config, data_dir)
        else "; the lists changed since: the next start or `filterdns lists update` rebuilds it"
    )
    yield Finding(
        "snapshot", f"{path} maps ({stats['entries']:,} entries, built {age} ago{stale})"
    )
    return {row["list"]: row["entries"] for row in stats["lists"]}


def _lists(config: Any, entries: dict[str, int]) -> Iterator[Finding]:
    """The local lists in one line (their newest change), each URL source in one line."""
    from listsync.fetch import SourceMeta

    now = time.time()
    local = [lc for lc in config.lists if not lc.url]
    newest = 0.0
    for lc in local:
        try:
            newest = max(newest, _newest_mtime(Path(lc.path)))
        except OSError as exc:
            yield Finding("lists", f"{lc.name or lc.path}: {exc.strerror}", "restore the file")
    if local:
        kind = "bundled" if config.source is None else "local"
        held = sum(
            n for key, n in entries.items() if key.split("/")[0] in {lc.name for lc in local}
        )
        count = f", {held:,} entries in the snapshot" if held else ""
        yield Finding(
            "lists", f"{len(local)} {kind} lists{count}, last changed {_age(now - newest)} ago"
        )
    for lc in config.lists:
        if not lc.url:
            continue
        name = lc.name or ""
        meta = SourceMeta.load(Path(lc.path).parent)
        if meta is None or not Path(lc.path).exists():
            if config.server.offline:  # the operator's choice: said, not a problem
                yield Finding("lists", f"{name}: not downloaded (offline), blocks nothing")
            else:
                yield Finding(
                    "lists",
                    f"{name}: not downloaded yet, so it blocks nothing",
                    "`filterdns serve` downloads it in the background, or run "
                    "`filterdns lists update`",
                )
            continue
        checked = now - meta.checked_at
        detail = (
            f"{name}: {meta.entries:,} entries, downloaded {_age(now - meta.fetched_at)} ago, "
            f"confirmed {_age(checked)} ago"
        )
        if checked > 2 * lc.refresh and not config.server.offline:
            yield Finding(
                "lists",
                f"{detail} (refresh every {_age(lc.refresh)})",
                f"{lc.url} has not been reachable: see `filterdns lists history --source {name}`",
            )
        else:
            yield Finding("lists", detail)


def _newest_mtime(path: Path) -> float:
    if not path.is_dir():
        return path.stat().st_mtime
    return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"

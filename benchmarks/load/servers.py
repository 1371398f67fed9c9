"""The servers under test (and NSD, the shared upstream): config, start, stats, stop.

Each server gets the same blocklist in its native format, a cache big enough for the
working set, one thread (or `threads`), and the same upstream. Start-up time is measured
from the exec to the first answered query. Every process is killed at `stop()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.load import data

TOOLS = ("dnsperf", "nsd", "unbound", "dnsmasq", "dnsdist")
START_TIMEOUT = 180.0  # seconds; 5M-entry lists take a while to load in some peers


def missing_tools(names: tuple[str, ...] = TOOLS) -> list[str]:
    """The tools of `names` not found on PATH (or in /usr/sbin)."""
    return [n for n in names if _which(n) is None]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def probe(port: int, name: str = f"host0.{data.ZONE}", timeout: float = 0.2) -> bool:
    """True when something on 127.0.0.1:port answers a query for `name`."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(msg, ("127.0.0.1", port))
            reply = s.recv(4096)
        except OSError:
            return False
    return len(reply) >= 12 and reply[:2] == b"\x42\x42"


def proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants (worker processes)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += proc_tree(int(child))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (all their threads), from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over the processes (PSS splits shared pages fairly)."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


class Server:
    """A DNS server process on 127.0.0.1:port."""

    name = "server"

    def __init__(
        self,
        workdir: Path,
        dataset: data.Dataset,
        upstream_port: int,
        *,
        cpus: str | None = None,
        threads: int = 1,
    ) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dataset = dataset
        self.upstream_port = upstream_port
        self.cpus = cpus
        self.threads = threads
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup = 0.0

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write the config files (not timed)."""

    def start(self) -> float:
        """Start, wait until it answers; returns the start-up time in seconds."""
        self.prepare()
        argv = self.command()
        if self.cpus and shutil.which("taskset"):
            argv = ["taskset", "-c", self.cpus, *argv]
        log = (self.workdir / "stderr.log").open("ab")
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            if probe(self.port, timeout=0.05):
                self.startup = time.monotonic() - started
                return self.startup
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT}s")

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc is not None else []

    def hit_rate(self) -> float | None:
        """The share of answered queries served from the cache (or local data), or None."""
        return None

    def details(self) -> dict[str, object]:
        """Anything else worth recording about the run (cumulative since start)."""
        return {}

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "stderr.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Nsd(Server):
    """NSD serving the bench zone: the upstream every server forwards to."""

    name = "nsd"

    def __init__(self, workdir: Path, dataset: data.Dataset, cpus: str | None = None) -> None:
        super().__init__(workdir, dataset, 0, cpus=cpus)

    def prepare(self) -> None:
        d = self.workdir
        # Response rate limiting would turn the miss-heavy mix (one wildcard) into TC slips.
        (d / "nsd.conf").write_text(
            nsd_config(
                d,
                "127.0.0.1",
                self.port,
                {data.ZONE: self.dataset.zone_file},
                server_extra="    rrl-ratelimit: 0\n",
            )
        )

    def command(self) -> list[str]:
        return [_which("nsd") or "nsd", "-d", "-c", str(self.workdir / "nsd.conf")]


def nsd_config(
    workdir: Path, address: str, port: int, zones: dict[str, Path | str], server_extra: str = ""
) -> str:
    """An nsd.conf for an unprivileged NSD on one loopback address, every file in `workdir`
    (no chroot, no user change, no database, no remote control), serving `zones`
    (name -> zone file). Shared with the test suite's NSD upstream."""
    zone_blocks = "".join(
        f'zone:\n    name: "{name}"\n    zonefile: "{path}"\n' for name, path in zones.items()
    )
    return f"""server:
    ip-address: {address}@{port}
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    database: ""
    zonesdir: "{workdir}"
    zonelistfile: "{workdir}/zone.list"
    xfrdfile: "{workdir}/xfrd.state"
    xfrdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    logfile: "{workdir}/nsd.log"
    verbosity: 0
    server-count: 1
    hide-version: yes
    refuse-any: no
    reuseport: no
{server_extra}remote-control:
    control-enable: no
{zone_blocks}"""


class Filterdns(Server):
    """`filterdns serve` from this source tree, the blocklist as a compiled snapshot."""

    name = "filterdns"

    def __init__(
        self, *args: object, workers: int = 1, snapshot: Path | None = None,
        querylog: bool = False, console: bool = False, **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.workers = workers
        self.snapshot = snapshot
        self.querylog = querylog
        self.console = console
        self.metrics_port = free_port()

    def prepare(self) -> None:
        self.config = self.workdir / "filterdns.toml"
        tail = ""
        if self.querylog:
            tail += (
                f'[querylog]\nenabled = true\npath = "{self.workdir / "queries.jsonl"}"\n'
                "max_bytes = 104857600\n\n"
            )
        if self.console:
            tail += f'[console]\nenabled = true\nstore_dir = "{self.workdir / "querylog.d"}"\n\n'
        if self.snapshot is None:
            tail += (
                f'[[lists]]\npath = "{self.dataset.domains_file}"\nformat = "domains"\n'
                'category = "adult"\nname = "bench"\n'
            )
        self.config.write_text(
            f"""[server]
listen = ["127.0.0.1:{self.port}"]
workers = {self.workers}

[upstream]
servers = ["127.0.0.1:{self.upstream_port}"]

[cache]
max_entries = 200000

[metrics]
listen = "127.0.0.1:{self.metrics_port}"

[logging]
level = "warning"

# Full features on: every query is mapped to a policy by its source address (the
# loopback client gets "default"); the child policy's network is not the client's.
[policies.default]
block = ["adult", "gambling"]

[policies.child]
clients = ["10.0.0.0/8"]
block = ["adult", "gambling", "drugs"]
safe_search = true

{tail}"""
        )

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "filterdns", "serve", "--config", str(self.config)]
        if self.snapshot is not None:
            argv += ["--snapshot", str(self.snapshot)]
        return argv

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode()

    def hit_rate(self) -> float | None:
        """Answers given without the upstream (cache hits and blocks) over all answers,
        the peers' definition (filterdns's own cache hit ratio counts blocks as misses)."""
        from prometheus_client.parser import text_string_to_metric_families

        local = total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            if family.name != "filterdns_queries":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
                    if sample.labels.get("result") in ("cached", "blocked"):
                        local += sample.value
        return local / total if total else None

    def details(self) -> dict[str, object]:
        """How much the C fast path answered itself, and why the rest went to Python: the
        proof that the figures are the fast path's."""
        from prometheus_client.parser import text_string_to_metric_families

        fast = answered = 0.0
        fallbacks: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == "filterdns_fastpath_answers_total":
                    fast += sample.value
                elif sample.name == "filterdns_fastpath_fallbacks_total" and sample.value:
                    reason = sample.labels["reason"]
                    fallbacks[reason] = fallbacks.get(reason, 0) + sample.value
                elif sample.name == "filterdns_queries_total":
                    answered += sample.value
        share = round(fast / answered, 4) if answered else None
        return {"fast_path_share": share, "fallbacks": fallbacks}


class Unbound(Server):
    """Unbound forwarding to NSD, the blocklist as `local-zone: always_nxdomain`."""

    name = "unbound"

    def prepare(self) -> None:
        d = self.workdir
        self.control_port = free_port()
        zones = data.unbound_local_zones(self.dataset.blocklist, d / "blocklist.conf")
        (d / "unbound.conf").write_text(
            f"""server:
    interface: 127.0.0.1@{self.port}
    port: {self.port}
    do-ip6: no
    num-threads: {self.threads}
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    msg-cache-size: 256m
    rrset-cache-size: 512m
    so-rcvbuf: 4m
    so-reuseport: yes
    qname-minimisation: no
    # `test.` is one of Unbound's default local zones (RFC 6761): it would answer the
    # bench zone NXDOMAIN itself instead of asking NSD.
    local-zone: "test." nodefault
    extended-statistics: no
    include: "{zones}"
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: 127.0.0.1
    control-port: {self.control_port}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{self.upstream_port}
"""
        )

    def command(self) -> list[str]:
        return [_which("unbound") or "unbound", "-d", "-c", str(self.workdir / "unbound.conf")]

    def hit_rate(self) -> float | None:
        out = subprocess.run(
            [
                _which("unbound-control") or "unbound-control",
                "-c",
                str(self.workdir / "unbound.conf"),
                "stats_noreset",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        stats = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        queries = float(stats.get("total.num.queries", 0))
        hits = float(stats.get("total.num.cachehits", 0))
        return hits / queries if queries else None


class Dnsmasq(Server):
    """dnsmasq forwarding to NSD, the blocklist as `address=/name/` lines."""

    name = "dnsmasq"

    def prepare(self) -> None:
        d = self.workdir
        data.dnsmasq_addresses(self.dataset.blocklist, d / "blocklist.conf")
        self.log = d / "dnsmasq.log"

    def command(self) -> list[str]:
        d = self.workdir
        return [
            _which("dnsmasq") or "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            f"--conf-file={d / 'blocklist.conf'}",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--server=127.0.0.1#{self.upstream_port}",
            "--cache-size=100000",
            "--user=root",
            f"--pid-file={d / 'dnsmasq.pid'}",
            f"--log-facility={self.log}",
            "--dns-forward-max=1000",
        ]

    def hit_rate(self) -> float | None:
        # SIGUSR1 writes "queries forwarded N, queries answered locally M" to the log.
        if self.proc is None:
            return None
        self.log.write_text("")
        os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(0.5)
        for line in self.log.read_text(errors="replace").splitlines():
            if "queries forwarded" in line:
                parts = line.replace(",", "").split()
                forwarded = int(parts[parts.index("forwarded") + 1])
                local = int(parts[parts.index("locally") + 1])
                total = forwarded + local
                return local / total if total else None
        return None


class Dnsdist(Server):
    """dnsdist with a packet cache, the blocklist in a SuffixMatchNode (Lua config)."""

    name = "dnsdist"

    def prepare(self) -> None:
        d = self.workdir
        self.web_port = free_port()
        rules = data.dnsdist_lua(self.dataset.blocklist, d / "blocklist.lua")
        (d / "dnsdist.conf").write_text(
            f"""setLocal("127.0.0.1:{self.port}", {{reusePort=true}})
setMaxUDPOutstanding(65535)
newServer({{address="127.0.0.1:{self.upstream_port}", checkInterval=3600}})
pc = newPacketCache(200000, {{maxTTL=86400, minTTL=0}})
getPool(""):setCache(pc)
webserver("127.0.0.1:{self.web_port}")
setWebserverConfig({{apiKey="bench", password="bench"}})
dofile("{rules}")
"""
        )

    def command(self) -> list[str]:
        return [
            _which("dnsdist") or "dnsdist",
            "--supervised",
            "--disable-syslog",
            "-C",
            str(self.workdir / "dnsdist.conf"),
        ]

    def hit_rate(self) -> float | None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/jsonstat?command=stats",
            headers={"X-API-Key": "bench"},
        )
        with urllib.request.urlopen(req, timeout=5) as reply:
            stats = json.loads(reply.read())
        queries = stats.get("queries", 0)
        local = stats.get("cache-hits", 0) + stats.get("rule-nxdomain", 0)
        return local / queries if queries else None


PEERS = {"unbound": Unbound, "dnsmasq": Dnsmasq, "dnsdist": Dnsdist}

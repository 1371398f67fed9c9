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
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import data

TOOLS = ("dnsperf", "nsd", "unbound", "dnsmasq", "dnsdist")
START_TIMEOUT = 180.0  # seconds; 5M-entry lists take a while to load in some peers
DNSTAP_ALL = ("client_query", "client_response", "forwarder_query", "forwarder_response")


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
    """`pid` and its descendants (worker processes, the console's query-log writers: a
    child is listed under the thread that started it)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
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


def writer_pids(pids: list[int]) -> list[int]:
    """Those of `pids` that are the console's query-log writers (querywriter.py)."""
    from dns_resolver.observability.querywriter import PROCESS_NAME

    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == PROCESS_NAME:
                out.append(pid)
    return out


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


def make_tls_certificate(
    directory: Path, name: str, ip: str = "127.0.0.1"
) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate it signed for `name` and `ip` (openssl CLI,
    EC P-256, valid one day): returns (CA file, certificate, key). Shared with the tests."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "server.ext"
    ext.write_text(
        f"subjectAltName = DNS:{name}, IP:{ip}\n"
        "extendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_file, "-days", "1",
         "-subj", "/CN=filterdns test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
        ["x509", "-req", "-in", csr, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext],
    ):
        subprocess.run(
            [_which("openssl") or "openssl", *map(str, argv)],
            check=True, capture_output=True, timeout=30,
        )
    return ca_file, cert, key


@dataclass(frozen=True)
class TlsUpstream:
    """A DoT server to forward to: port, certificate name, the CA file that signed it."""

    port: int
    name: str
    ca_file: Path


@dataclass(frozen=True)
class ServeTls:
    """What a server under test serves DoT and DoH with: one certificate for all of them,
    for `name`, signed by the CA in `ca_file` (`make_tls_certificate`)."""

    cert: Path
    key: Path
    ca_file: Path
    name: str


DOH_PATH = "/dns-query"
BENCH_CLIENT_ID = "bench1"  # the child policy's ClientID (DoT with a ClientID, transports.py)


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
        # Ports of the encrypted listeners, for servers given a ServeTls (0: none).
        self.tls_port = self.https_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup = 0.0
        self.cwd: Path | None = None  # where the process starts (default: ours)

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
                cwd=self.cwd,
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

    def console_rows(self) -> tuple[float, float] | None:
        """(rows written, rows dropped) by a query-log writer so far; None: none runs."""
        return None

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


def _cpu_set(cpus: str) -> set[int]:
    """A taskset CPU list ("0", "0,2", "0-3") as a set."""
    out: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


class DnstapSink:
    """A dnstap collector on a Unix socket: it answers the Frame Streams handshake (READY
    -> ACCEPT with the offered content type, STOP -> FINISH) and hands each data frame to
    `on_frame`, or, without one, reads and discards the stream (what a fast collector
    costs the sender: the load benchmark's `--dnstap`). Counts `received` bytes. `cpus`
    (a taskset list) pins its thread."""

    def __init__(
        self,
        path: Path,
        on_frame: Callable[[bytes], None] | None = None,
        cpus: str | None = None,
    ) -> None:
        from dns_resolver.observability.dnstap import READY, STOP, control_frame

        self.on_frame = on_frame
        self.cpus = cpus
        self.received = 0
        self._stop_frame = control_frame(STOP, content_type=False)
        self._ready = READY
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(4)
        self._thread = threading.Thread(target=self._serve, name="dnstap-sink", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        if self.cpus:
            # On the client's cores, as a remote collector would be: not on the server's.
            os.sched_setaffinity(threading.get_native_id(), _cpu_set(self.cpus))
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                with conn:
                    self._handshake(conn)
                    if self.on_frame is None:
                        self._discard(conn)
                    else:
                        self._frames(conn)

    def _handshake(self, conn: socket.socket) -> None:
        from dns_resolver.observability.dnstap import ACCEPT, CONTENT_TYPE, read_control

        kind, types = read_control(conn)
        if kind != self._ready or CONTENT_TYPE not in types:
            raise ConnectionError("not a dnstap sender")
        body = struct.pack("!III", ACCEPT, 1, len(CONTENT_TYPE)) + CONTENT_TYPE
        conn.sendall(struct.pack("!II", 0, len(body)) + body)
        read_control(conn)  # START

    def _discard(self, conn: socket.socket) -> None:
        buf = bytearray(1 << 20)
        tail = b""
        while True:
            n = conn.recv_into(buf)
            if n == 0:
                return
            self.received += n
            # STOP comes last (a data frame ends with Dnstap.type, never with these bytes).
            tail = (tail + bytes(buf[max(0, n - 12) : n]))[-12:]
            if tail == self._stop_frame:
                self._finish(conn)
                return

    def _frames(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb")
        while True:
            head = stream.read(4)
            if len(head) < 4:
                return
            (length,) = struct.unpack("!I", head)
            if length == 0:  # a control frame: after START, only STOP comes
                self._finish(conn)
                return
            frame = stream.read(length)
            self.received += 4 + length
            assert self.on_frame is not None
            self.on_frame(frame)

    def _finish(self, conn: socket.socket) -> None:
        from dns_resolver.observability.dnstap import FINISH, control_frame

        with contextlib.suppress(OSError):
            conn.sendall(control_frame(FINISH, content_type=False))


class Filterdns(Server):
    """`filterdns serve` from this source tree, the blocklist as a compiled snapshot."""

    name = "filterdns"

    def __init__(
        self, *args: object, workers: int = 1, snapshot: Path | None = None,
        querylog: bool = False, tls: TlsUpstream | None = None, ratelimit: bool = False,
        dnstap: bool = False, sink_cpus: str | None = None, observed: bool = False,
        console: bool = False, fast_path: bool = True, serve: ServeTls | None = None,
        quic: bool = False, rule_port: int | None = None, source: Path | None = None,
        dnstap_messages: tuple[str, ...] = (), **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.serve = serve
        self.quic = quic  # with `serve`: DoQ too
        self.quic_port = 0
        # `source`: another checkout of filterdns (built in place) to run instead of this
        # one, for before/after figures in one session (`python -m` imports from the cwd).
        self.cwd = source
        self.rule_port = rule_port
        self.workers = workers
        self.fast_path = fast_path
        self.snapshot = snapshot
        self.querylog = querylog
        self.tls = tls
        self.ratelimit = ratelimit
        self.dnstap = dnstap
        self.dnstap_messages = dnstap_messages  # default: [dnstap]'s (the client's two)
        self.sink_cpus = sink_cpus
        self.sink: DnstapSink | None = None
        self.observed = observed
        self.console = console
        self.metrics_port = free_port()

    def prepare(self) -> None:
        self.config = self.workdir / "filterdns.toml"
        tail = ""
        if self.dnstap:
            sock = self.workdir / "dnstap.sock"
            self.sink = DnstapSink(sock, cpus=self.sink_cpus)
            tail += f'[dnstap]\nsocket = "{sock}"\n'
            if self.dnstap_messages:
                tail += f"messages = {list(self.dnstap_messages)}\n".replace("'", '"')
            tail += "\n"
        if self.querylog:
            tail += (
                f'[querylog]\nenabled = true\npath = "{self.workdir / "queries.jsonl"}"\n'
                "max_bytes = 104857600\n\n"
            )
        if self.ratelimit:
            # Far above any load here: every query is charged to its bucket, none limited.
            tail += "[ratelimit]\nenabled = true\nqps = 100000000.0\nburst = 100000000\n\n"
        if self.observed:
            tail += "[observed]\nenabled = true\n\n"
        if self.console:
            tail += f'[console]\nenabled = true\nstore_dir = "{self.workdir / "querylog.d"}"\n\n'
        if self.rule_port is not None:
            tail += (
                f'[[forward]]\ndomains = ["{data.RULE_ZONE}"]\n'
                f'servers = ["127.0.0.1:{self.rule_port}"]\n\n'
            )
        if self.snapshot is None:
            tail += (
                f'[[lists]]\npath = "{self.dataset.domains_file}"\nformat = "domains"\n'
                'category = "adult"\nname = "bench"\n'
            )
        listeners = ""
        if self.serve is not None:
            self.tls_port, self.https_port = free_port(), free_port()
            listeners = (f'listen_tls = ["127.0.0.1:{self.tls_port}"]\n'
                         f'listen_https = ["127.0.0.1:{self.https_port}"]\n')
            if self.quic:
                self.quic_port = free_port()
                listeners += f'listen_quic = ["127.0.0.1:{self.quic_port}"]\n'
            tail += (f'[tls]\ncert = "{self.serve.cert}"\nkey = "{self.serve.key}"\n'
                     f'server_name = "{self.serve.name}"\n\n')
        upstream = f'servers = ["127.0.0.1:{self.upstream_port}"]'
        if self.tls is not None:
            upstream = (
                f'servers = ["tls://127.0.0.1:{self.tls.port}#{self.tls.name}"]\n'
                f'ca_file = "{self.tls.ca_file}"'
            )
        self.config.write_text(
            f"""[server]
listen = ["127.0.0.1:{self.port}"]
{listeners}workers = {self.workers}
fast_path = {"true" if self.fast_path else "false"}

[upstream]
{upstream}

[cache]
max_entries = 200000

# The bench zone is below `test.`, served locally by default (RFC 6761): forward it.
[local]
nodefault = ["test"]

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
client_ids = ["{BENCH_CLIENT_ID}"]
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

    def console_rows(self) -> tuple[float, float] | None:
        """(rows written, rows dropped) by the console's query-log writer so far, or None
        without the console."""
        if not self.console:
            return None
        from prometheus_client.parser import text_string_to_metric_families

        written = dropped = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == "filterdns_console_rows_written_total":
                    written += sample.value
                elif sample.name == "filterdns_console_rows_dropped_total":
                    dropped += sample.value
        return written, dropped

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
        dnstap: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == "filterdns_fastpath_answers_total":
                    fast += sample.value
                elif sample.name == "filterdns_fastpath_fallbacks_total" and sample.value:
                    reason = sample.labels["reason"]
                    fallbacks[reason] = fallbacks.get(reason, 0) + sample.value
                elif sample.name == "filterdns_queries_total":
                    answered += sample.value
                elif sample.name.startswith("filterdns_dnstap_") and sample.name.endswith(
                    ("sent_total", "dropped_total")
                ):
                    dnstap[sample.name.removeprefix("filterdns_dnstap_")] = sample.value
        share = round(fast / answered, 4) if answered else None
        out: dict[str, object] = {"fast_path_share": share, "fallbacks": fallbacks}
        if self.sink is not None:
            out["dnstap"] = {**dnstap, "sink_bytes": self.sink.received}
        return out

    def stop(self) -> None:
        super().stop()
        if self.sink is not None:
            self.sink.close()
            self.sink = None


class Unbound(Server):
    """Unbound forwarding to NSD, the blocklist as `local-zone: always_nxdomain`; or, with
    `tls`, forwarding over DoT (`forward-tls-upstream`) to that server instead."""

    name = "unbound"

    def __init__(
        self, *args: object, tls: TlsUpstream | None = None, serve: ServeTls | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tls = tls
        self.serve = serve

    def prepare(self) -> None:
        d = self.workdir
        self.control_port = free_port()
        forward = f"forward-addr: 127.0.0.1@{self.upstream_port}"
        tls_bundle = ""
        listeners = ""
        if self.serve is not None:
            self.tls_port, self.https_port = free_port(), free_port()
            listeners = f"""
    interface: 127.0.0.1@{self.tls_port}
    interface: 127.0.0.1@{self.https_port}
    tls-port: {self.tls_port}
    https-port: {self.https_port}
    http-endpoint: "{DOH_PATH}"
    tls-service-key: "{self.serve.key}"
    tls-service-pem: "{self.serve.cert}"
    incoming-num-tcp: 1000"""
        if self.tls is not None:
            forward = (
                f"forward-addr: 127.0.0.1@{self.tls.port}#{self.tls.name}\n"
                "    forward-tls-upstream: yes"
            )
            tls_bundle = f'\n    tls-cert-bundle: "{self.tls.ca_file}"'
        zones = data.unbound_local_zones(self.dataset.blocklist, d / "blocklist.conf")
        (d / "unbound.conf").write_text(
            f"""server:
    interface: 127.0.0.1@{self.port}
    port: {self.port}{listeners}
{_unbound_common(d, self.threads)}
    so-rcvbuf: 4m
    so-reuseport: yes
    qname-minimisation: no
    # `test.` is one of Unbound's default local zones (RFC 6761): it would answer the
    # bench zone NXDOMAIN itself instead of asking NSD.
    local-zone: "test." nodefault
    extended-statistics: no{tls_bundle}
    include: "{zones}"
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: 127.0.0.1
    control-port: {self.control_port}
forward-zone:
    name: "."
    {forward}
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


def _unbound_common(d: Path, threads: int) -> str:
    """The `server:` lines both Unbound set-ups share: loopback, no privileges dropped,
    files under `d`, the iterator alone, and the same cache sizes."""
    return f"""    do-ip6: no
    num-threads: {threads}
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
    rrset-cache-size: 512m"""


class UnboundDot(Server):
    """Unbound answering DNS over TLS on `tls.port` (and plain DNS on `port`), forwarding
    to NSD: the DoT upstream of the `--upstream-transport dot` runs. No blocklist."""

    name = "unbound-dot-upstream"

    def prepare(self) -> None:
        d = self.workdir
        ca_file, cert, key = make_tls_certificate(d / "tls", "dot.bench.test")
        self.tls = TlsUpstream(free_port(), "dot.bench.test", ca_file)
        (d / "unbound.conf").write_text(
            f"""server:
    interface: 127.0.0.1@{self.port}
    interface: 127.0.0.1@{self.tls.port}
    port: {self.port}
    tls-port: {self.tls.port}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
{_unbound_common(d, self.threads)}
    incoming-num-tcp: 100
    qname-minimisation: no
    # `test.` is one of Unbound's default local zones (RFC 6761): see Unbound.prepare.
    local-zone: "test." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{self.upstream_port}
"""
        )

    def command(self) -> list[str]:
        return [_which("unbound") or "unbound", "-d", "-c", str(self.workdir / "unbound.conf")]


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

    def __init__(self, *args: object, serve: ServeTls | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.serve = serve

    def prepare(self) -> None:
        d = self.workdir
        self.web_port = free_port()
        rules = data.dnsdist_lua(self.dataset.blocklist, d / "blocklist.lua")
        listeners = ""
        if self.serve is not None:
            self.tls_port, self.https_port = free_port(), free_port()
            cert, key = self.serve.cert, self.serve.key
            listeners = (
                f'addTLSLocal("127.0.0.1:{self.tls_port}", "{cert}", "{key}")\n'
                f'addDOHLocal("127.0.0.1:{self.https_port}", "{cert}", "{key}", "{DOH_PATH}")\n'
            )
        (d / "dnsdist.conf").write_text(
            f"""setLocal("127.0.0.1:{self.port}", {{reusePort=true}})
{listeners}setMaxUDPOutstanding(65535)
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

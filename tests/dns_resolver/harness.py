"""Real peers for the resolver's integration tests: NSD, a fault-injecting upstream, the
`filterdns serve` process, and dig / kdig / dnspython as clients.

Everything binds to loopback, every wait is bounded, and every process or thread started
here is stopped by its owner's `stop()` (the fixtures in conftest.py call it at teardown).
`docs/resolver-harness.md` describes the API for test writers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
from dnslib import QTYPE, RCODE, RR, A, DNSQuestion, DNSRecord

from benchmarks.load.servers import nsd_config
from dns_resolver.observability.metrics import Metrics
from dns_resolver.resolver import Resolver
from dns_resolver.steps.acl import Acl
from dns_resolver.steps.blocking import Blocker
from dns_resolver.steps.cache import Cache
from dns_resolver.transports.server import DnsServer
from dns_resolver.upstreams.upstream import Forwarder

REPO_ROOT = Path(__file__).resolve().parents[2]
NSD = "/usr/sbin/nsd"
NSD_CHECKZONE = "/usr/sbin/nsd-checkzone"
DIG = "/usr/bin/dig"
KDIG = "/usr/bin/kdig"

LOOPBACK = "127.0.0.1"


# --- ports ---------------------------------------------------------------------------------


_GIVEN: collections.deque[int] = collections.deque(maxlen=4096)  # ports free_port gave out


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on `host` (DNS needs both on the same number).

    Binds TCP to port 0, then UDP to the same number; retried when UDP happens to be taken.
    The sockets are closed before returning, so the kernel may offer the same number again:
    a number given out lately is never given twice (one config's listeners asked for one
    after another would otherwise collide now and then). A rare race with another process
    remains.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if port in _GIVEN:
                continue
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                _GIVEN.append(port)
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `check` every 0.1 s until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def wait_for_dns(
    port: int, host: str = LOOPBACK, timeout: float = 10.0, is_alive: Any = None
) -> bool:
    """Poll until something on host:port answers a DNS message over UDP (any reply counts).

    The probe is a bare 12-byte header with QDCOUNT=0, which a server answers itself
    (FORMERR) without asking an upstream, so readiness does not depend on upstreams.
    Returns False on timeout or when `is_alive()` turns false.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            return False
        qid = random.randrange(65536)
        reply = send_raw_udp(
            port, struct.pack("!HHHHHH", qid, 0, 0, 0, 0, 0), host=host, timeout=0.2
        )
        if reply is not None and len(reply) >= 2 and struct.unpack("!H", reply[:2])[0] == qid:
            return True
        time.sleep(0.05)
    return False


# --- raw and dnspython clients -------------------------------------------------------------


def send_raw_udp(
    port: int,
    payload: bytes,
    source: str | None = None,
    *,
    host: str | None = None,
    timeout: float = 2.0,
) -> bytes | None:
    """Send `payload` as one datagram from `source` to host:port; the reply, or None.

    `host` defaults to the loopback address of `source`'s family, `source` to the loopback
    address of `host`'s family (127.0.0.1 when neither is given).
    """
    if host is None:
        host = "::1" if source and ":" in source else LOOPBACK
    if source is None:
        source = "::1" if ":" in host else LOOPBACK
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(payload, (host, port))
        try:
            data, _ = s.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return data


def send_raw_tcp(
    port: int,
    payload: bytes,
    host: str = LOOPBACK,
    *,
    timeout: float = 2.0,
    source: str | None = None,
    prefix: bytes = b"",
) -> bytes | None:
    """Send `payload` with its 2-byte length prefix over TCP (from `source`, after the
    raw bytes `prefix`, e.g. a PROXY protocol header); the reply's body, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            if source is not None:
                s.bind((source, 0))
            s.connect((host, port))
            s.sendall(prefix + struct.pack("!H", len(payload)) + payload)
            head = _recv_exact(s, 2)
            if head is None:
                return None
            return _recv_exact(s, struct.unpack("!H", head)[0])
        except (TimeoutError, ConnectionError):
            return None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def make_query(
    name: str,
    qtype: str = "A",
    *,
    edns: int | None = 0,
    payload: int = 1232,
    dnssec: bool = False,
    cd: bool = False,
    options: Sequence[dns.edns.Option] = (),
) -> dns.message.Message:
    """A dnspython query message; `edns=None` sends no OPT record."""
    q = dns.message.make_query(
        name,
        qtype,
        use_edns=edns if edns is not None else False,
        payload=payload,
        want_dnssec=dnssec,
        options=list(options) or None,
    )
    if cd:
        q.flags |= dns.flags.CD
    return q


def query(
    port: int,
    name: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    host: str = LOOPBACK,
    source: str | None = None,
    timeout: float = 2.0,
    message: dns.message.Message | None = None,
    **query_options: Any,
) -> dns.message.Message:
    """Ask host:port with dnspython and return the parsed reply.

    `query_options` go to `make_query` (edns, payload, dnssec, cd, options); `message`
    sends a prepared message instead. A truncated UDP reply is returned as is (TC set),
    never retried over TCP, so tests can see truncation. Raises dns.exception.Timeout.
    """
    msg = message if message is not None else make_query(name, qtype, **query_options)
    if tcp:
        return dns.query.tcp(msg, host, timeout=timeout, port=port, source=source)
    return dns.query.udp(
        msg, host, timeout=timeout, port=port, source=source, ignore_trailing=False
    )


# --- dig and kdig --------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One resource record as dig prints it."""

    name: str
    ttl: int
    rclass: str
    rtype: str
    data: str


@dataclass
class DigResult:
    """The parsed output of one dig or kdig run.

    `status` is None when no reply arrived (then `returncode` is non-zero).
    `ede` holds (info-code, text) pairs of Extended DNS Errors.
    """

    status: str | None
    flags: frozenset[str]
    answer: list[Record]
    authority: list[Record]
    additional: list[Record]
    ede: list[tuple[int, str]]
    stdout: str
    stderr: str
    returncode: int

    def rdata(self, rtype: str | None = None) -> list[str]:
        """The data of the answer records (of `rtype`, if given)."""
        return [r.data for r in self.answer if rtype is None or r.rtype == rtype]

    @property
    def ede_text(self) -> str:
        """All EDE lines joined, for `in` checks."""
        return "\n".join(f"{code} {text}" for code, text in self.ede)


_SECTION_RE = re.compile(r"^;; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:", re.IGNORECASE)
# dig: ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1"; kdig uses ';' separators.
_STATUS_RE = re.compile(r"->>HEADER<<-.*?status: ([A-Z0-9]+)")
_FLAGS_RE = re.compile(r"^;; [Ff]lags: ([a-z ]*)[;:]")
# dig: "; EDE: 15 (Blocked): (text)"; kdig: ";; EDE: 15 (Blocked): 'text'".
_EDE_RE = re.compile(r"^;;? EDE: (\d+)(?: \([^)]*\))?(?:: (.*))?$")


def _parse_dig(stdout: str, stderr: str, returncode: int) -> DigResult:
    status = None
    flags: frozenset[str] = frozenset()
    sections: dict[str, list[Record]] = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    ede: list[tuple[int, str]] = []
    current: str | None = None
    for line in stdout.splitlines():
        if m := _STATUS_RE.search(line):
            status = m.group(1)
            continue
        if m := _FLAGS_RE.match(line):
            flags = frozenset(m.group(1).split())
            continue
        if m := _EDE_RE.match(line):
            text = (m.group(2) or "").strip()
            if len(text) >= 2 and text[0] in "('" and text[-1] in ")'":
                text = text[1:-1]
            ede.append((int(m.group(1)), text))
            continue
        if m := _SECTION_RE.match(line):
            current = m.group(1).upper()
            continue
        if not line.strip() or line.startswith(";"):
            if not line.strip():
                current = None
            continue
        if current is not None:
            parts = line.split(None, 4)
            if len(parts) >= 4 and parts[1].isdigit():
                data = parts[4] if len(parts) == 5 else ""
                sections[current].append(
                    Record(parts[0].lower(), int(parts[1]), parts[2], parts[3], data)
                )
    return DigResult(
        status=status,
        flags=flags,
        answer=sections["ANSWER"],
        authority=sections["AUTHORITY"],
        additional=sections["ADDITIONAL"],
        ede=ede,
        stdout=stdout,
        stderr=stderr,
        returncode=returncode,
    )


def _run_client(argv: list[str]) -> DigResult:
    # dig's own timeouts (+time=2 +tries=1) bound the run; the subprocess timeout is a
    # backstop for a hung client.
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return _parse_dig(proc.stdout, proc.stderr, proc.returncode)


def dig(server: str, port: int, name: str, qtype: str = "A", *opts: str) -> DigResult:
    """Run `dig @server -p port name qtype +time=2 +tries=1 *opts` and parse its output.

    Later options override earlier ones, so `+tcp`, `+dnssec`, `+bufsize=512`, `+ignore`,
    `+norecurse`, `-b 127.0.0.2` all work as in a shell.
    """
    return _run_client(
        [DIG, f"@{server}", "-p", str(port), name, qtype, "+time=2", "+tries=1", *opts]
    )


def kdig(server: str, port: int, name: str, qtype: str = "A", *opts: str) -> DigResult:
    """Run Knot's `kdig` like `dig` (same result type; kdig's option syntax)."""
    return _run_client(
        [KDIG, f"@{server}", "-p", str(port), name, qtype, "+timeout=2", "+retry=0", *opts]
    )


# --- test lists ----------------------------------------------------------------------------


def write_list(
    directory: str | os.PathLike[str], lines: Iterable[str], name: str = "block.txt"
) -> Path:
    """Write a list file (one entry a line) into `directory` and return its path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def write_test_blocklist(directory: str | os.PathLike[str], name: str = "block.txt") -> Path:
    """Write `TestZone.BLOCKLIST` (names and answer IPs of the test zone) to a file."""
    return write_list(directory, TestZone.BLOCKLIST, name)


# --- the authoritative upstream: NSD -------------------------------------------------------


class TestZone:
    """The zone NSD serves, and what tests may expect from it. Names are absolute."""

    __test__ = False  # not a pytest test class, despite its name

    NAME = "filterdns.test."
    TTL = 300
    SHORT_TTL = 2
    NEGATIVE_TTL = 60  # SOA minimum; the SOA record's TTL is higher, so 60 is what counts

    WWW = "www.filterdns.test."
    WWW_A = "192.0.2.1"
    WWW_AAAA = "2001:db8::1"
    SHORT = "short.filterdns.test."  # A with TTL 2
    SHORT_A = "192.0.2.2"
    MULTI = "multi.filterdns.test."
    MULTI_A = ("192.0.2.10", "192.0.2.11")
    ALIAS = "alias.filterdns.test."  # CNAME www
    CHAIN = "chain.filterdns.test."  # CNAME alias -> CNAME www
    CLOAK = "cloak.filterdns.test."  # CNAME tracker.blocked-target (blocked in BLOCKLIST)
    CLOAK_TARGET = "tracker.blocked-target.filterdns.test."
    CLOAK_TARGET_A = "192.0.2.77"
    MX = "mx.filterdns.test."  # MX 10 mail
    MAIL = "mail.filterdns.test."
    MAIL_A = "192.0.2.25"
    TXT = "txt.filterdns.test."
    TXT_TEXT = "hello from filterdns"
    BIGTXT = "bigtxt.filterdns.test."  # 10 x 200-byte strings: > 2000 bytes, needs TCP
    BIGTXT_STRINGS = tuple(f"{i:02d}" + chr(ord("a") + i) * 198 for i in range(10))
    BADIP = "badip.filterdns.test."  # A record listed in BLOCKLIST (answer-IP inspection)
    BADIP_A = "198.51.100.66"
    BADIP6 = "badip6.filterdns.test."
    BADIP6_AAAA = "2001:db8:bad::66"
    BLOCKED = "blocked.filterdns.test."  # the name itself is in BLOCKLIST
    BLOCKED_SUB = "deep.sub.blocked.filterdns.test."
    BLOCKED_A = "192.0.2.99"
    NXDOMAIN = "does-not-exist.filterdns.test."
    NODATA = "www.filterdns.test."  # has A/AAAA, no MX: MX query is NODATA
    SRV = "_sip._tcp.filterdns.test."

    BLOCKLIST = (
        "blocked.filterdns.test",
        "blocked-target.filterdns.test",
        BADIP_A,
        BADIP6_AAAA,
    )

    @classmethod
    def zone_text(cls) -> str:
        """The zone file text."""
        big = " ".join(f'"{s}"' for s in cls.BIGTXT_STRINGS)
        return f"""$ORIGIN {cls.NAME}
$TTL {cls.TTL}
@       3600 IN SOA ns1 hostmaster 2024010101 3600 600 86400 {cls.NEGATIVE_TTL}
@            IN NS  ns1
@            IN MX  10 mail
ns1          IN A   127.0.0.1
www          IN A   {cls.WWW_A}
www          IN AAAA {cls.WWW_AAAA}
short   {cls.SHORT_TTL}  IN A   {cls.SHORT_A}
multi        IN A   {cls.MULTI_A[0]}
multi        IN A   {cls.MULTI_A[1]}
alias        IN CNAME www
chain        IN CNAME alias
cloak        IN CNAME {cls.CLOAK_TARGET}
{cls.CLOAK_TARGET} IN A {cls.CLOAK_TARGET_A}
mx           IN MX  10 mail
mail         IN A   {cls.MAIL_A}
txt          IN TXT "{cls.TXT_TEXT}"
bigtxt       IN TXT {big}
badip        IN A   {cls.BADIP_A}
badip6       IN AAAA {cls.BADIP6_AAAA}
blocked      IN A   {cls.BLOCKED_A}
deep.sub.blocked IN A {cls.BLOCKED_A}
_sip._tcp    IN SRV 10 5 5060 www
"""


class NsdServer:
    """An NSD process on 127.0.0.1 serving `TestZone`, restartable on the same port.

    Attributes: `address`, `port`, `zone` (the zone name, absolute), `workdir`.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        extra_zones: dict[str, str] | None = None,
    ) -> None:
        """`extra_zones`: more zones to serve, name (absolute) -> zone file text (e.g. the
        safe-search targets of `tests/dns_resolver/policy_zone.py`)."""
        self.address = LOOPBACK
        self.port = port or free_port(LOOPBACK)
        self.zone = TestZone.NAME
        self.extra_zones = dict(extra_zones or {})
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    def _write_files(self) -> None:
        d = self.workdir
        zone_file = d / "filterdns.test.zone"
        zones = {TestZone.NAME: (zone_file, TestZone.zone_text())}
        for name, text in self.extra_zones.items():
            zones[name] = (d / f"{name.rstrip('.')}.zone", text)
        for name, (path, text) in zones.items():
            path.write_text(text, encoding="ascii")
            check = subprocess.run(
                [NSD_CHECKZONE, name, str(path)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if check.returncode != 0:
                raise RuntimeError(
                    f"nsd-checkzone rejected the test zone: {check.stdout}{check.stderr}"
                )
        (d / "nsd.conf").write_text(
            nsd_config(d, self.address, self.port, {n: p for n, (p, _t) in zones.items()}),
            encoding="ascii",
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start NSD (in the foreground, `-d`) and wait until it answers."""
        if self.running:
            return
        log = (self.workdir / "nsd.stderr").open("ab")
        try:
            self._proc = subprocess.Popen(
                [NSD, "-d", "-c", str(self.workdir / "nsd.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        if not wait_for_dns(self.port, self.address, timeout, is_alive=lambda: self.running):
            self.stop()
            raise RuntimeError(
                f"nsd did not answer on {self.address}:{self.port}: {self.log_text()}"
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop NSD (SIGTERM, then SIGKILL); idempotent. The port stays reserved for start()."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def log_text(self) -> str:
        parts = []
        for name in ("nsd.stderr", "nsd.log"):
            with contextlib.suppress(OSError):
                parts.append((self.workdir / name).read_text(errors="replace"))
        return "".join(parts)

    @property
    def upstream(self) -> str:
        """The `ADDR:PORT` string for `upstream.servers`."""
        return f"{self.address}:{self.port}"


# --- the fault-injecting upstream ------------------------------------------------------------

FAULT_MODES = (
    "ok",  # answers A queries with `answer_ip` (TTL `answer_ttl`), others with NODATA
    "timeout",  # never answers
    "wrong_id",  # a correct answer with a different message ID
    "wrong_question",  # a correct-looking answer for another name
    "wrong_source",  # a correct answer sent from another port
    "truncate",  # TC=1 and no records over UDP; the full answer over TCP
    "garbage",  # random bytes
    "servfail",  # SERVFAIL
    "refused",  # REFUSED
)


@dataclass
class ReceivedQuery:
    """A query the fault upstream received (the raw bytes, and parsed when parseable)."""

    protocol: str  # "udp" or "tcp"
    wire: bytes
    record: DNSRecord | None
    peer: tuple[str, int] | None = None  # the sender's address and (source) port

    @property
    def qname(self) -> str | None:
        return str(self.record.q.qname) if self.record is not None else None

    @property
    def qtype(self) -> str | None:
        return QTYPE.get(self.record.q.qtype) if self.record is not None else None

    @property
    def dnspython(self) -> dns.message.Message:
        """The query parsed by dnspython (for EDNS checks: DO bit, options, payload)."""
        return dns.message.from_wire(self.wire)


@dataclass
class FaultUpstream:
    """A UDP+TCP DNS server on loopback whose misbehaviour a test switches with `.mode`.

    Thread-bounded: one UDP thread, one TCP accept thread, at most 4 TCP connection workers.
    `delay` (seconds) postpones every reply, for parallel-strategy races.
    """

    address: str = LOOPBACK
    mode: str = "ok"
    answer_ip: str = "192.0.2.53"
    answer_ttl: int = 60
    delay: float = 0.0
    port: int = 0
    received: list[ReceivedQuery] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {FAULT_MODES}")
        self.port = self.port or free_port(self.address)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._udp = socket.socket(family, socket.SOCK_DGRAM)
        self._udp.bind((self.address, self.port))
        self._udp.settimeout(0.1)
        self._tcp = socket.socket(family, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((self.address, self.port))
        self._tcp.listen(16)
        self._tcp.settimeout(0.1)
        self._other = socket.socket(family, socket.SOCK_DGRAM)  # for wrong_source
        self._other.bind((self.address, 0))
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fault-tcp")
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, name=f"fault-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def upstream(self) -> str:
        """The `ADDR:PORT` string for `upstream.servers`."""
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )

    @property
    def count(self) -> int:
        """How many queries arrived (UDP and TCP)."""
        with self._lock:
            return len(self.received)

    def count_of(self, protocol: str) -> int:
        with self._lock:
            return sum(1 for q in self.received if q.protocol == protocol)

    def reset(self) -> None:
        """Forget the received queries."""
        with self._lock:
            self.received.clear()

    def stop(self) -> None:
        """Stop the threads and close the sockets; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in (self._udp, self._tcp, self._other):
            s.close()

    # -- behaviour --

    def _record(
        self, protocol: str, wire: bytes, peer: tuple[str, int] | None = None
    ) -> DNSRecord | None:
        try:
            record: DNSRecord | None = DNSRecord.parse(wire)
        except Exception:  # noqa: BLE001 - a test may send anything; record it unparsed
            record = None
        with self._lock:
            self.received.append(ReceivedQuery(protocol, wire, record, peer))
        return record

    def _reply(self, query: DNSRecord, protocol: str) -> bytes | None:
        """The reply bytes for the current mode, or None to stay silent."""
        mode = self.mode
        if mode == "timeout":
            return None
        if mode == "garbage":
            return random.randbytes(random.randrange(1, 64))
        reply = query.reply()  # copies ID, question, RD; sets QR, RA
        if query.ar:
            # Echo an OPT so an EDNS-speaking forwarder sees an EDNS-speaking upstream.
            reply.add_ar(query.ar[0])
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        if mode == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        if mode == "truncate" and protocol == "udp":
            reply.header.tc = 1
            return reply.pack()
        if query.q.qtype == QTYPE.A:
            reply.add_answer(
                RR(query.q.qname, QTYPE.A, rdata=A(self.answer_ip), ttl=self.answer_ttl)
            )
        if mode == "wrong_id":
            reply.header.id = (query.header.id + 1) % 65536
        elif mode == "wrong_question":
            reply.questions = [DNSQuestion("spoofed.example.", query.q.qtype)]
            reply.rr = [
                RR("spoofed.example.", QTYPE.A, rdata=A(self.answer_ip), ttl=self.answer_ttl)
            ]
        return reply.pack()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            query = self._record("udp", wire, peer[:2])
            if query is None:
                continue
            if self.delay:
                self._stop.wait(self.delay)
            out = self._reply(query, "udp")
            if out is not None:
                sock = self._other if self.mode == "wrong_source" else self._udp
                with contextlib.suppress(OSError):
                    sock.sendto(out, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except (TimeoutError, OSError):
                continue
            self._pool.submit(self._handle_tcp, conn)

    def _handle_tcp(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            idle_deadline = time.monotonic() + 5
            while not self._stop.is_set() and time.monotonic() < idle_deadline:
                try:
                    head = _recv_exact(conn, 2)
                    if head is None:
                        return
                    wire = _recv_exact(conn, struct.unpack("!H", head)[0])
                except TimeoutError:
                    continue
                except OSError:
                    return
                if wire is None:
                    return
                query = self._record("tcp", wire)
                if query is None:
                    return
                if self.delay:
                    self._stop.wait(self.delay)
                out = self._reply(query, "tcp")
                if out is None:
                    continue  # "timeout": keep the connection open, answer nothing
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("!H", len(out)) + out)


# --- the filterdns process -------------------------------------------------------------------


def to_toml(data: Mapping[str, Any]) -> str:
    """Serialise the subset of TOML a config uses: tables, arrays of tables, scalars, arrays."""
    lines: list[str] = []
    scalars = {
        k: v for k, v in data.items() if not isinstance(v, Mapping | list) or _is_plain_array(v)
    }
    for key, value in scalars.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if key in scalars:
            continue
        if isinstance(value, Mapping):
            lines.append(f"\n[{key}]")
            for k, v in value.items():
                lines.append(f"{k} = {_toml_value(v)}")
        else:
            for item in value:
                lines.append(f"\n[[{key}]]")
                for k, v in item.items():
                    lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _is_plain_array(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, Mapping) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | os.PathLike):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # a nested table, e.g. [policies] child = {...}
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


class ServerProcess:
    """A running `python -m filterdns serve --config FILE`.

    Attributes: `host`, `port` (DNS, UDP and TCP), `metrics_port` (None if disabled),
    `config_path`, `config` (the dict written), `proc`.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        workdir: Path,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 10.0,
        name: str = "filterdns",
    ) -> None:
        self.workdir = workdir
        self.config = config
        # NAME.toml, NAME.stdout, NAME.stderr in workdir, which is also the cwd, so relative
        # paths in the config mean the same to the server and to the test.
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(to_toml(config), encoding="utf-8")
        listen = config["server"]["listen"]
        self.host = listen[0].rsplit(":", 1)[0].strip("[]")
        self.port = _port_of(listen[0])
        metrics = config.get("metrics", {}).get("listen", "")
        self.metrics_port = _port_of(metrics) if metrics else None
        self._stdout = workdir / f"{name}.stdout"
        self._stderr = workdir / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "filterdns", "serve", "--config", str(self.config_path)]
        with self._stdout.open("wb") as out, self._stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [*argv, *extra_args],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        try:
            ready = wait_for_dns(self.port, self.host, ready_timeout, is_alive=self.running)
        except BaseException:
            self.kill()  # never leak a server the caller has no handle on
            raise
        if not ready:
            code = self.proc.poll()
            self.kill()
            state = f"exited with status {code}" if code is not None else "did not answer"
            raise RuntimeError(
                f"filterdns serve {state} within {ready_timeout}s on {self.host}:{self.port}\n"
                f"config:\n{self.config_path.read_text()}\nstderr:\n{self.stderr_text()}"
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int = signal.SIGHUP) -> None:
        self.proc.send_signal(sig)

    def stderr_text(self) -> str:
        return self._stderr.read_text(errors="replace")

    def stdout_text(self) -> str:
        return self._stdout.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Send `sig` and wait up to `timeout` s; the exit status, or None if it hung (killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    # -- conveniences for tests --

    def dig(self, name: str, qtype: str = "A", *opts: str) -> DigResult:
        return dig(self.host, self.port, name, qtype, *opts)

    def kdig(self, name: str, qtype: str = "A", *opts: str) -> DigResult:
        return kdig(self.host, self.port, name, qtype, *opts)

    def query(self, name: str, qtype: str = "A", **kwargs: Any) -> dns.message.Message:
        return query(self.port, name, qtype, host=self.host, **kwargs)

    def metrics_text(self) -> str:
        """The raw Prometheus exposition from /metrics."""
        if self.metrics_port is None:
            raise RuntimeError("metrics are disabled in this server's config")
        return scrape(LOOPBACK, self.metrics_port)

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0.0 when absent), e.g.
        `metric("filterdns_queries_total", qtype="A", protocol="udp", result="allowed")`."""
        return sample_value(self.metrics_text(), name, **labels)


def scrape(host: str, port: int, timeout: float = 5.0) -> str:
    """GET http://host:port/metrics and return the body."""
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def sample_value(exposition: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels}` in Prometheus text (0.0 when absent).

    Labels not given are summed over, so `sample_value(t, "filterdns_queries_total",
    result="blocked")` totals every qtype and protocol.
    """
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def filterdns_config(
    config: str | Mapping[str, Any] | None = None,
    *,
    upstreams: Sequence[str] = (),
) -> dict[str, Any]:
    """A config dict from TOML text or a dict, with test defaults filled in.

    Fills a free loopback `server.listen`, a free `metrics.listen` (unless set; "" keeps
    metrics off), `upstream.servers` from `upstreams` when the config names none, and
    `local.nodefault = ["test"]` unless set (the test zones are below `test.`).
    """
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, str):
        data = tomllib.loads(config)
    else:
        data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in config.items()}
    server = data.setdefault("server", {})
    server.setdefault("listen", [f"{LOOPBACK}:{free_port()}"])
    metrics = data.setdefault("metrics", {})
    metrics.setdefault("listen", f"{LOOPBACK}:{free_port()}")
    if upstreams:
        data.setdefault("upstream", {}).setdefault("servers", list(upstreams))
    # The test zones are below `test.`, which is served locally (NXDOMAIN) by default:
    # forward it, as the load benchmark's Unbound does with `local-zone: "test." nodefault`.
    data.setdefault("local", {}).setdefault("nodefault", ["test"])
    return data


class InProcessServer:
    """A `DnsServer` on an event loop in a thread of this process, for tests that look
    inside it (its fast path, counted constructors). `with ... as (port, server)`.

    Args:
        matcher: the lists.
        upstreams: "ADDR:PORT" strings (`NsdServer.upstream`, `FaultUpstream.upstream`).
        fast_path: serve UDP through the C fast path (else the asyncio endpoint).
        timeout: the upstream timeout.
    """

    def __init__(
        self, matcher: Any, upstreams: Sequence[str], *, fast_path: bool = True,
        timeout: float = 2.0,
    ) -> None:
        servers = [(u.rsplit(":", 1)[0].strip("[]"), int(u.rsplit(":", 1)[1]))
                   for u in upstreams]
        self.metrics = Metrics()
        resolver = Resolver(
            matcher, Forwarder(servers, timeout=timeout, observer=self.metrics), acl=Acl(),
            cache=Cache(), blocker=Blocker(), metrics=self.metrics,
        )
        self.server = DnsServer(resolver, [(LOOPBACK, 0)], fast_path=fast_path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> tuple[int, Any]:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        port = self.server.addresses[0][1]
        assert wait_for_dns(port, LOOPBACK, 10)
        return port, self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

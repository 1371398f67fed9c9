"""Integration: DNS-over-TLS and DNS-over-HTTPS upstreams through a real `filterdns serve`,
with Unbound on loopback as the encrypted upstream (`tls-port`, `https-port`) forwarding
to the test NSD, and a CA made for the test.

Unbound also answers plain DNS on its DoT and DoH port numbers, so a query sent there in
plain text would be answered: the tests read Unbound's counters (`unbound-control stats`)
to show that every query it received came over TLS or HTTPS.
"""

from __future__ import annotations

import signal
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest

from benchmarks.load.servers import make_tls_certificate
from tests.dns_resolver.harness import (
    LOOPBACK,
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    eventually,
    free_port,
)

Z = TestZone
UNBOUND = "/usr/sbin/unbound"
UNBOUND_CONTROL = "/usr/sbin/unbound-control"
SERVER_NAME = "ns1.filterdns.test"  # NSD's zone gives it 127.0.0.1: the DoH bootstrap answer


# --- a CA and a server certificate for the test ------------------------------------------


@dataclass(frozen=True)
class TestCa:
    __test__ = False

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_ca(directory: Path) -> TestCa:
    """A CA and a certificate it signed for SERVER_NAME and 127.0.0.1."""
    return TestCa(*make_tls_certificate(directory, SERVER_NAME, LOOPBACK))


# --- Unbound as a DoT and DoH server -------------------------------------------------------


class UnboundTls:
    """Unbound answering DoT on `dot_port` and DoH on `doh_port` (`/dns-query`) with the
    test certificate, forwarding `filterdns.test` to NSD."""

    def __init__(self, workdir: Path, ca: TestCa, nsd: NsdServer) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.ca = ca
        self.dot_port = free_port()
        self.doh_port = free_port()
        self.config = workdir / "unbound.conf"
        self.config.write_text(
            f"""server:
    interface: {LOOPBACK}@{self.dot_port}
    interface: {LOOPBACK}@{self.doh_port}
    port: {self.dot_port}
    tls-port: {self.dot_port}
    https-port: {self.doh_port}
    tls-service-key: "{ca.key_file}"
    tls-service-pem: "{ca.cert_file}"
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    extended-statistics: yes
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: {LOOPBACK}
    control-port: {free_port()}
forward-zone:
    name: "{Z.NAME}"
    forward-addr: {nsd.address}@{nsd.port}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "unbound.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [UNBOUND, "-d", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        context = ssl.create_default_context(cafile=str(self.ca.ca_file))

        def answers() -> bool:
            try:
                reply = dns.query.tls(
                    dns.message.make_query(Z.WWW, "A"), LOOPBACK, timeout=0.5,
                    port=self.dot_port, ssl_context=context, server_hostname=SERVER_NAME,
                )
            except (OSError, dns.exception.DNSException):
                return False
            return bool(reply.answer)

        if not eventually(answers, timeout=10):
            self.stop()
            raise RuntimeError(f"unbound did not answer over TLS: {self.log_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return (self.workdir / "unbound.log").read_text(errors="replace")

    def queries(self) -> dict[str, int]:
        """Queries received so far: `total`, and over `tls` and `https` (the readiness
        probe is one TLS query)."""
        out = subprocess.run(
            [UNBOUND_CONTROL, "-c", str(self.config), "stats_noreset"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        stats = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return {
            "total": int(float(stats["total.num.queries"])),
            "tls": int(float(stats.get("num.query.tls", 0))),
            "https": int(float(stats.get("num.query.https", 0))),
        }

    def dot(self, name: str = SERVER_NAME) -> str:
        return f"tls://{LOOPBACK}:{self.dot_port}#{name}"

    def doh(self, host: str = SERVER_NAME) -> str:
        return f"https://{host}:{self.doh_port}/dns-query"


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def make_unbound(
    tmp_path: Path, test_ca: TestCa, nsd_upstream: NsdServer
) -> Iterator[Callable[[], UnboundTls]]:
    started: list[UnboundTls] = []

    def make() -> UnboundTls:
        unbound = UnboundTls(tmp_path / f"unbound-{len(started)}", test_ca, nsd_upstream)
        started.append(unbound)
        unbound.start()
        return unbound

    yield make
    for unbound in started:
        unbound.stop()


def encrypted_config(
    servers: list[str], test_ca: TestCa, fast_path: bool = True, **upstream: object
) -> dict:
    return {
        "server": {"fast_path": fast_path},
        "upstream": {"servers": servers, "ca_file": str(test_ca.ca_file), **upstream},
        "cache": {"enabled": False},
    }


def fast_path_misses(server: ServerProcess) -> float:
    """Misses the C fast path handed to the Python chain instead of forwarding them."""
    return server.metric("filterdns_fastpath_fallbacks_total", reason="miss")


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["relayed-from-c", "python"])
def test_misses_go_through_dot_on_one_kept_connection(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa,
    fast_path: bool,
) -> None:
    unbound = make_unbound()
    server = start_filterdns(encrypted_config([unbound.dot()], test_ca, fast_path))
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]
    assert server.dig(Z.MX, "MX").rdata("MX") == [f"10 {Z.MAIL}"]
    assert server.dig(Z.TXT, "TXT", "+tcp").rdata("TXT") == [f'"{Z.TXT_TEXT}"']
    assert server.dig(Z.NXDOMAIN, "A").status == "NXDOMAIN"
    name = unbound.dot()
    assert server.metric("filterdns_upstream_queries_total", upstream=name) == 4
    assert server.metric("filterdns_upstream_errors_total", upstream=name) == 0
    # Four queries, one connection: it is kept open and reused.
    assert server.metric("filterdns_upstream_connections_total", transport="tls") == 1
    assert unbound.queries() == {"total": 5, "tls": 5, "https": 0}  # with the probe
    # With the fast path, C forwarded the three UDP misses through the relay and answered
    # them; the +tcp one came through the C stream loop, which hands misses to Python.
    # Without it, Python asked.
    assert server.metric("filterdns_fastpath_answers_total") == (3 if fast_path else 0)
    assert fast_path_misses(server) == (1 if fast_path else 0)


def test_misses_go_through_doh_with_the_host_from_bootstrap(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa,
    nsd_upstream: NsdServer,
) -> None:
    unbound = make_unbound()
    server = start_filterdns(
        encrypted_config([unbound.doh()], test_ca, bootstrap=[nsd_upstream.upstream])
    )
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]
    assert server.dig(Z.WWW, "AAAA").rdata("AAAA") == [Z.WWW_AAAA]
    assert server.dig(Z.NXDOMAIN, "A").status == "NXDOMAIN"
    name = unbound.doh()
    assert server.metric("filterdns_upstream_queries_total", upstream=name) == 3
    assert server.metric("filterdns_upstream_errors_total", upstream=name) == 0
    assert server.metric("filterdns_upstream_connections_total", transport="https") == 1
    # DoH counts as TLS too. Unbound serves DoH over HTTP/2 only: these were HTTP/2 streams.
    assert unbound.queries() == {"total": 4, "tls": 4, "https": 3}


@pytest.mark.parametrize("transport", ["tls", "https"])
def test_a_certificate_for_another_name_is_rejected_and_counted(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    make_fault_upstream: Callable[..., FaultUpstream],
    test_ca: TestCa,
    transport: str,
) -> None:
    unbound = make_unbound()
    # The certificate is for ns1.filterdns.test and 127.0.0.1, not for this name.
    if transport == "tls":
        upstream = unbound.dot("wrong.filterdns.test")
        config = encrypted_config([upstream], test_ca, max_failures=10)
    else:
        upstream = unbound.doh("wrong.filterdns.test")
        bootstrap = make_fault_upstream(answer_ip=LOOPBACK)  # the name is Unbound's address
        config = encrypted_config(
            [upstream], test_ca, max_failures=10, bootstrap=[bootstrap.upstream]
        )
    server = start_filterdns(config)
    assert server.dig(Z.WWW, "A").status == "SERVFAIL"
    assert server.dig(Z.MAIL, "A").status == "SERVFAIL"
    assert server.metric(
        "filterdns_upstream_errors_total", upstream=upstream, kind="certificate"
    ) == 2
    assert server.metric("filterdns_upstream_connections_total") == 0
    assert "certificate rejected" in server.stderr_text()
    assert unbound.queries()["total"] == 1  # the probe: nothing was sent in plain text


def test_an_unknown_ca_is_rejected_without_ca_file(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
) -> None:
    unbound = make_unbound()
    server = start_filterdns({"upstream": {"servers": [unbound.dot()]}})
    assert server.dig(Z.WWW, "A").status == "SERVFAIL"
    assert server.metric(
        "filterdns_upstream_errors_total", upstream=unbound.dot(), kind="certificate"
    ) == 1
    assert unbound.queries()["total"] == 1


@pytest.mark.parametrize("fast_path", [True, False], ids=["relayed-from-c", "python"])
def test_killing_unbound_fails_over_to_the_next_upstream(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa,
    fast_path: bool,
) -> None:
    first, second = make_unbound(), make_unbound()
    doh = f"https://{LOOPBACK}:{second.doh_port}/dns-query"  # the certificate has the IP
    server = start_filterdns(
        encrypted_config(
            [first.dot(), doh], test_ca, fast_path, max_failures=2, retry_dead_after=60
        )
    )
    for i in range(3):
        assert server.dig(f"before-{i}.{Z.NAME}", "A").status == "NXDOMAIN"
    assert server.metric("filterdns_upstream_queries_total", upstream=first.dot()) == 3
    first.kill()
    for i in range(5):
        assert server.dig(f"after-{i}.{Z.NAME}", "A").status == "NXDOMAIN"
    assert server.metric("filterdns_upstream_queries_total", upstream=doh) == 5
    assert server.metric("filterdns_upstream_healthy", upstream=first.dot()) == 0
    # Exactly the failures that mark it dead: an answer C matched before the kill is not
    # taken for a success after the first failure (which would make it need a third).
    assert server.metric("filterdns_upstream_errors_total", upstream=first.dot()) == 2


def established_to(port: int) -> int:
    """TCP connections in state ESTABLISHED to 127.0.0.1:`port` (from /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].split(":")[1], 16) == port:
            count += 1
    return count


@pytest.mark.parametrize("transport", ["tls", "https"])
def test_an_idle_connection_is_closed_and_the_next_query_opens_another(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa,
    transport: str,
) -> None:
    unbound = make_unbound()
    if transport == "tls":
        upstream, port = unbound.dot(), unbound.dot_port
    else:
        upstream, port = f"https://{LOOPBACK}:{unbound.doh_port}/dns-query", unbound.doh_port
    server = start_filterdns(encrypted_config([upstream], test_ca, idle_timeout=0.5))
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]
    assert established_to(port) == 1
    assert eventually(lambda: established_to(port) == 0, timeout=5)
    assert server.dig(Z.MAIL, "A").rdata("A") == [Z.MAIL_A]
    assert server.metric("filterdns_upstream_connections_total", transport=transport) == 2
    assert server.metric("filterdns_upstream_errors_total") == 0


def test_parallel_takes_the_answer_of_the_good_encrypted_upstream(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa,
) -> None:
    unbound = make_unbound()
    wrong = unbound.dot("wrong.filterdns.test")
    doh = f"https://{LOOPBACK}:{unbound.doh_port}/dns-query"
    server = start_filterdns(
        encrypted_config([wrong, doh], test_ca, strategy="parallel", max_failures=10)
    )
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]
    assert server.dig(Z.MAIL, "A").rdata("A") == [Z.MAIL_A]
    # (The rejected DoT attempt may be cancelled mid-handshake once DoH has answered, so
    # its error count is not fixed; DoH's answers are.)
    assert server.metric("filterdns_upstream_queries_total", upstream=doh) == 2
    assert server.metric("filterdns_upstream_errors_total", upstream=doh) == 0


def test_an_http_error_from_doh_is_an_upstream_error(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa,
) -> None:
    unbound = make_unbound()
    wrong_path = f"https://{LOOPBACK}:{unbound.doh_port}/not-dns"  # Unbound: 404
    server = start_filterdns(encrypted_config([wrong_path], test_ca, max_failures=10))
    assert server.dig(Z.WWW, "A").status == "SERVFAIL"
    assert server.metric("filterdns_upstream_errors_total", upstream=wrong_path, kind="http") == 1
    assert "HTTP status 404" in server.stderr_text()


def test_a_forward_rule_over_dot_is_relayed_from_c(
    start_filterdns: Callable[..., ServerProcess],
    make_unbound: Callable[[], UnboundTls],
    make_fault_upstream: Callable[..., FaultUpstream],
    test_ca: TestCa,
) -> None:
    unbound = make_unbound()
    default = make_fault_upstream()
    config = encrypted_config([default.upstream], test_ca)
    config["forward"] = [{"domains": [Z.NAME], "servers": [unbound.dot()]}]
    server = start_filterdns(config)
    assert server.dig(Z.WWW, "A").rdata("A") == [Z.WWW_A]
    assert server.dig(Z.MX, "MX").rdata("MX") == [f"10 {Z.MAIL}"]
    assert server.dig(Z.NXDOMAIN, "A").status == "NXDOMAIN"
    # C sent the rule's names on its set's relay: answered in C, none handed to Python.
    assert server.metric("filterdns_fastpath_answers_total") == 3
    assert fast_path_misses(server) == 0
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="policy") == 0
    assert server.metric("filterdns_upstream_queries_total", upstream=unbound.dot()) == 3
    assert server.metric("filterdns_upstream_connections_total", transport="tls") == 1
    assert unbound.queries() == {"total": 4, "tls": 4, "https": 0}  # with the probe
    assert not [q for q in default.received if Z.NAME.rstrip(".") in str(q.qname)]

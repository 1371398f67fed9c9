"""dnstap through a real collector: the `dnstap` command of golang-dnstap (Debian's
golang-github-dnstap-golang-dnstap-cli) listens, `filterdns serve` connects to it (Frame
Streams, bidirectional handshake), and what the collector prints is checked field by
field. Its YAML output has every field but the Policy message (and its raw output is not
flushed when it stops), so the Policy is read by the load benchmark's collector
(`DnstapSink`) and decoded by the protobuf runtime with the published schema (`dnstap-pb`,
the generated module of dnstap.proto).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
from dnstap_pb import dnstap_pb2 as pb

from benchmarks.load.servers import DnstapSink
from fdconfig import ConfigError, load_config
from tests.dns_resolver.harness import (
    LOOPBACK,
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    eventually,
    free_port,
)
from tests.dns_resolver.upstreams.test_integration_encrypted_upstreams import (
    TestCa,
    UnboundTls,
    encrypted_config,
)
from tests.dns_resolver.upstreams.test_integration_encrypted_upstreams import (  # noqa: F401 (fixtures)
    make_unbound as make_unbound,
)
from tests.dns_resolver.upstreams.test_integration_encrypted_upstreams import (  # noqa: F401
    test_ca as test_ca,
)

DNSTAP = "/usr/bin/dnstap"
ALL_MESSAGES = ["client_query", "client_response", "forwarder_query", "forwarder_response"]


class Collector:
    """`dnstap -u SOCKET` (or `-l ADDR:PORT`) writing
    its YAML (`-y`) to a file in `workdir`."""

    def __init__(
        self, workdir: Path, target: str, *, tcp: bool = False, name: str = "collector"
    ) -> None:
        self.out = workdir / f"{name}.yaml"
        self.err = workdir / f"{name}.stderr"
        argv = [DNSTAP, "-l" if tcp else "-u", target, "-w", str(self.out), "-y"]
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        if not tcp:
            assert eventually(lambda: "opened input socket" in self.err.read_text()), (
                self.err.read_text()
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def documents(self) -> list[dict[str, Any]]:
        """The YAML documents written so far (a small reader for the CLI's fixed layout:
        top-level keys, `message:` with two-space keys, `|` blocks at four spaces)."""
        docs: list[dict[str, Any]] = []
        text = self.out.read_text() if self.out.exists() else ""
        for chunk in text.split("---\n"):
            if not chunk.strip().endswith(("|", "")) or "message:" not in chunk:
                continue
            doc: dict[str, Any] = {}
            message: dict[str, Any] = {}
            block: str | None = None
            for line in chunk.splitlines():
                if line.startswith("    ") and block is not None:
                    message[block] += line[4:] + "\n"
                    continue
                block = None
                if line.startswith("  "):
                    key, _, value = line.strip().partition(": ")
                    if value == "|":
                        block = key
                        message[key] = ""
                    else:
                        message[key] = value.strip('"').removeprefix("!!timestamp ")
                elif ": " in line:
                    key, _, value = line.partition(": ")
                    doc[key] = value.strip('"')
            doc["message"] = message
            docs.append(doc)
        return docs


class PolicyReader:
    """The frames a `DnstapSink` (the benchmark's collector) receives, decoded by the
    protobuf runtime: for the Policy message, which the `dnstap` command does not print."""

    def __init__(self, path: Path) -> None:
        self.frames: list[pb.Dnstap] = []
        self.sink = DnstapSink(path, lambda frame: self.frames.append(pb.Dnstap.FromString(frame)))

    def asked(self) -> list[pb.Dnstap]:
        """The frames whose DNS message has a question (not the harness's readiness
        probe, a bare header)."""
        return [
            f
            for f in list(self.frames)
            if (f.message.query_message or f.message.response_message)[4:6] == b"\0\1"
        ]


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """Start collectors (`collectors(target, tcp=, name=)`); killed at teardown."""
    started: list[Collector] = []

    def start(target: str, **kwargs: Any) -> Collector:
        collector = Collector(tmp_path, target, **kwargs)
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.kill()


def _dnstap(target: dict[str, Any], **keys: Any) -> dict[str, Any]:
    return {"dnstap": {**target, "identity": "test-resolver", **keys}}


def _of(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    """The messages of type `kind` about `name` (in their query or response)."""
    needle = f"\n;{name}\tIN\t"
    return [
        d["message"] for d in docs
        if d["message"]["type"] == kind
        and needle in "\n" + d["message"].get("query_message", "")
        + d["message"].get("response_message", "")
    ]  # fmt: skip


def _questions(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents whose DNS message has a question."""
    return [
        d for d in docs
        if "QUESTION SECTION" in d["message"].get("query_message", "")
        + d["message"].get("response_message", "")
    ]  # fmt: skip


def _connected(server: ServerProcess) -> Callable[[], bool]:
    return lambda: server.metric("filterdns_dnstap_connected") == 1


def test_messages_field_by_field(
    tmp_path: Path, collectors: Callable[..., Collector], filterdns_on_nsd: Callable[...,
    ServerProcess], nsd_upstream: NsdServer,
) -> None:  # fmt: skip
    sock = tmp_path / "dnstap.sock"
    collector = collectors(str(sock))
    server = filterdns_on_nsd(_dnstap({"socket": str(sock)}, messages=ALL_MESSAGES))
    assert eventually(_connected(server))
    assert server.dig(TestZone.WWW).status == "NOERROR"  # forwarded
    assert server.dig(TestZone.WWW).status == "NOERROR"  # cached (answered in C)
    assert server.dig(TestZone.BLOCKED).status == "NXDOMAIN"  # by Python (first block)
    assert server.dig(TestZone.BLOCKED).status == "NXDOMAIN"  # by C (its EDE is known)
    assert server.dig(TestZone.CLOAK).status == "NXDOMAIN"  # CNAME cloaking
    # 2 exchanges with forwarder messages (4 each), 3 without (2 each); the harness's
    # readiness probe (a bare header, answered FORMERR) is left out.
    assert eventually(lambda: len(_questions(collector.documents())) == 14)
    docs = collector.documents()
    for doc in docs:
        assert doc["type"] == "MESSAGE"
        assert doc["identity"] == "test-resolver"
        assert doc["version"] == "filterdns"
        assert doc["message"]["socket_family"] == "INET"
        assert doc["message"]["socket_protocol"] == "UDP"

    # The pass-through and the cache hit: the hit asks nobody upstream.
    queries = _of(docs, "CLIENT_QUERY", TestZone.WWW)
    responses = _of(docs, "CLIENT_RESPONSE", TestZone.WWW)
    assert len(queries) == len(responses) == 2
    assert len(_of(docs, "FORWARDER_QUERY", TestZone.WWW)) == 1
    assert len(_of(docs, "FORWARDER_RESPONSE", TestZone.WWW)) == 1
    for q in queries:
        assert q["query_address"] == "127.0.0.0"  # truncated: [querylog] anonymize
        assert 0 < int(q["query_port"]) < 65536
        assert q["query_time"]
        assert "response_message" not in q and "response_time" not in q
        assert "opcode: QUERY, status: NOERROR" in q["query_message"]
        assert "flags: rd" in q["query_message"]
    for r in responses:
        assert r["query_address"] == "127.0.0.0"
        assert r["response_time"] >= r["query_time"]
        assert "flags: qr rd ra" in r["response_message"]
        assert f"{TestZone.WWW}\t" in r["response_message"]
        assert f"IN\tA\t{TestZone.WWW_A}" in r["response_message"]
    (fq,) = _of(docs, "FORWARDER_QUERY", TestZone.WWW)
    (fr,) = _of(docs, "FORWARDER_RESPONSE", TestZone.WWW)
    assert fq["response_address"] == fr["response_address"] == LOOPBACK
    assert int(fq["response_port"]) == int(fr["response_port"]) == nsd_upstream.port
    assert "query_address" not in fq
    assert "flags: qr aa rd" in fr["response_message"]  # NSD's own answer, authoritative
    assert f"IN\tA\t{TestZone.WWW_A}" in fr["response_message"]

    # Blocks: answered NXDOMAIN, never asked upstream.
    blocked = _of(docs, "CLIENT_RESPONSE", TestZone.BLOCKED)
    assert len(blocked) == 2
    assert all("status: NXDOMAIN" in r["response_message"] for r in blocked)
    assert not _of(docs, "FORWARDER_QUERY", TestZone.BLOCKED)

    # CNAME cloaking: the upstream's answer names the listed target; the client gets NXDOMAIN.
    (cloak_fr,) = _of(docs, "FORWARDER_RESPONSE", TestZone.CLOAK)
    assert f"CNAME\t{TestZone.CLOAK_TARGET}" in cloak_fr["response_message"]
    (cloak_cr,) = _of(docs, "CLIENT_RESPONSE", TestZone.CLOAK)
    assert "status: NXDOMAIN" in cloak_cr["response_message"]


@pytest.fixture
def policy_reader(tmp_path: Path) -> Iterator[PolicyReader]:
    reader = PolicyReader(tmp_path / "policy.sock")
    yield reader
    reader.sink.close()


def test_policy_messages(
    tmp_path: Path, policy_reader: PolicyReader, filterdns_on_nsd: Callable[...,
    ServerProcess],
) -> None:  # fmt: skip
    """The Policy of each block: by the name (Python's first block, then C's), by a
    CNAME target, by an answer address."""
    server = filterdns_on_nsd(
        _dnstap({"socket": str(tmp_path / "policy.sock")}, messages=["client_response"])
    )
    assert server.dig(TestZone.WWW).status == "NOERROR"
    assert server.dig(TestZone.BLOCKED).status == "NXDOMAIN"  # Python
    assert server.dig(TestZone.BLOCKED, "A", "+noedns").status == "NXDOMAIN"  # C, no EDNS
    assert server.dig(TestZone.CLOAK).status == "NXDOMAIN"
    assert server.dig(TestZone.BADIP).status == "NXDOMAIN"
    assert eventually(lambda: len(policy_reader.asked()) == 5)
    by_name: dict[str, list[Any]] = {}
    for frame in policy_reader.asked():
        assert frame.message.type == pb.Message.CLIENT_RESPONSE
        assert frame.identity == b"test-resolver"
        assert frame.message.query_address == bytes([127, 0, 0, 0])
        by_name.setdefault(_qname(frame.message.response_message), []).append(frame.message)
    assert not by_name[TestZone.WWW][0].HasField("policy")
    for blocked in by_name[TestZone.BLOCKED]:
        assert blocked.policy.type == "filterdns"
        assert blocked.policy.rule == b"category=adult list=test rule=blocked.filterdns.test"
        assert blocked.policy.action == pb.Policy.NXDOMAIN
        assert blocked.policy.match == pb.Policy.QNAME
        assert blocked.policy.value == _wire(TestZone.BLOCKED)
    assert len(by_name[TestZone.BLOCKED]) == 2
    (cloak,) = by_name[TestZone.CLOAK]
    assert cloak.policy.rule == (
        b"category=adult list=test rule=blocked-target.filterdns.test "
        b"via=cname=" + TestZone.CLOAK_TARGET.rstrip(".").encode()
    )
    assert cloak.policy.match == pb.Policy.QNAME  # Match has no CNAME target: docs/dnstap.md
    assert cloak.policy.value == _wire(TestZone.CLOAK_TARGET)
    (badip,) = by_name[TestZone.BADIP]
    assert badip.policy.match == pb.Policy.RESPONSE_IP
    assert badip.policy.value == socket.inet_aton(TestZone.BADIP_A)
    assert badip.policy.action == pb.Policy.NXDOMAIN


def test_policy_actions_as_answered(
    tmp_path: Path, policy_reader: PolicyReader, filterdns_on_nsd: Callable[...,
    ServerProcess],
) -> None:  # fmt: skip
    """`mode = "null"`: A is answered with 0.0.0.0 (LOCAL_DATA), MX with nothing (NODATA)."""
    server = filterdns_on_nsd(
        {
            **_dnstap({"socket": str(tmp_path / "policy.sock")}, messages=["client_response"]),
            "blocking": {"mode": "null"},
        }
    )
    assert server.dig(TestZone.BLOCKED).rdata("A") == ["0.0.0.0"]
    assert server.dig(TestZone.BLOCKED, "MX").status == "NOERROR"
    assert eventually(lambda: len(policy_reader.asked()) == 2)
    actions = {
        _qtype(f.message.response_message): f.message.policy.action
        for f in policy_reader.asked()
    }  # fmt: skip
    assert actions == {1: pb.Policy.LOCAL_DATA, 15: pb.Policy.NODATA}


def test_hashed_client_same_from_c_and_python(
    tmp_path: Path, policy_reader: PolicyReader, filterdns_on_nsd: Callable[..., ServerProcess]
) -> None:
    """`[querylog] anonymize = "hash"`: one client has one pseudonym, whether C or Python
    answered (a first block goes through Python, the next one is answered in C)."""
    server = filterdns_on_nsd(
        {
            **_dnstap({"socket": str(tmp_path / "policy.sock")}, messages=["client_query"]),
            "querylog": {"anonymize": "hash"},
        }
    )
    for _ in range(2):
        assert server.dig(TestZone.BLOCKED).status == "NXDOMAIN"
    assert eventually(lambda: len(policy_reader.asked()) == 2)
    addresses = {f.message.query_address for f in policy_reader.asked()}
    assert len(addresses) == 1
    (address,) = addresses
    assert len(address) == 4
    assert address not in (socket.inet_aton(LOOPBACK), bytes([127, 0, 0, 0]))


def _qname(message: bytes) -> str:
    labels, pos = [], 12
    while message[pos]:
        labels.append(message[pos + 1 : pos + 1 + message[pos]].decode())
        pos += 1 + message[pos]
    return ".".join(labels) + "."


def _qtype(message: bytes) -> int:
    end = 12 + len(_wire(_qname(message)))
    return int.from_bytes(message[end : end + 2], "big")


def _wire(name: str) -> bytes:
    return (
        b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
        + b"\0"
    )


def test_tcp_collector_tcp_client_full_address(
    collectors: Callable[..., Collector],
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    """dnstap over TCP (`dnstap -l`), a client over TCP, and `anonymize = false`."""
    port = free_port()
    collector = collectors(f"{LOOPBACK}:{port}", tcp=True)
    server = filterdns_on_nsd(_dnstap({"address": f"{LOOPBACK}:{port}"}, anonymize=False))
    assert eventually(_connected(server))
    assert server.dig(TestZone.WWW, "A", "+tcp").status == "NOERROR"
    assert server.dig(TestZone.WWW).status == "NOERROR"
    # A cache hit over TCP: written by the C stream loop.
    assert server.dig(TestZone.WWW, "A", "+tcp").status == "NOERROR"
    assert eventually(lambda: len(_questions(collector.documents())) == 6)
    docs = collector.documents()
    protocols = sorted(m["socket_protocol"] for m in _of(docs, "CLIENT_QUERY", TestZone.WWW))
    assert protocols == ["TCP", "TCP", "UDP"]
    for message in _questions(docs):
        assert message["message"]["query_address"] == LOOPBACK


def test_encrypted_transports_are_named(
    tmp_path: Path,
    collectors: Callable[..., Collector],
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    """DoT and DoH queries say DOT and DOH as their socket protocol."""
    from tests.dns_resolver.encrypted import doh_port, dot_port, dot_query, encrypted_config

    sock = tmp_path / "dnstap.sock"
    collector = collectors(str(sock))
    config = {**encrypted_config(tmp_path), **_dnstap({"socket": str(sock)})}
    server = filterdns_on_nsd(config)
    assert eventually(_connected(server))
    # The second DoT query is a cache hit, answered by the C stream loop.
    for _ in range(2):
        assert dot_query(dot_port(server), TestZone.WWW).rcode() == dns.rcode.NOERROR
    answer = dns.query.https(
        dns.message.make_query(TestZone.BLOCKED, "A"), LOOPBACK, port=doh_port(server),
        verify=False, timeout=5,
    )  # fmt: skip
    assert answer.rcode() == dns.rcode.NOERROR
    assert eventually(lambda: len(_questions(collector.documents())) == 6)
    docs = collector.documents()
    assert [m["socket_protocol"] for m in _of(docs, "CLIENT_QUERY", TestZone.WWW)] == [
        "DOT", "DOT"
    ]
    assert [m["socket_protocol"] for m in _of(docs, "CLIENT_RESPONSE", TestZone.BLOCKED)] == [
        "DOH"
    ]


def test_collector_killed_and_restarted(
    tmp_path: Path, collectors: Callable[..., Collector], filterdns_on_nsd: Callable[...,
    ServerProcess],
) -> None:  # fmt: skip
    """The server keeps answering while the collector is away, counts what it drops, and
    the stream comes back when the collector does."""
    sock = tmp_path / "dnstap.sock"
    first = collectors(str(sock), name="first")
    server = filterdns_on_nsd(_dnstap({"socket": str(sock)}, queue_size=8))
    assert eventually(_connected(server))
    assert server.dig(TestZone.WWW).status == "NOERROR"
    assert eventually(lambda: len(_of(first.documents(), "CLIENT_RESPONSE", TestZone.WWW)) == 1)
    first.kill()
    # The writer learns the collector is gone from its next write (one exchange, lost).
    assert server.dig(TestZone.WWW).status == "NOERROR"
    assert eventually(lambda: server.metric("filterdns_dnstap_connected") == 0)
    assert eventually(lambda: server.metric("filterdns_dnstap_dropped_total") == 2)
    # Away: every query is answered; the queue keeps at most its 8, the rest is counted.
    for _ in range(20):
        assert server.dig(TestZone.WWW).status == "NOERROR"
        assert server.dig(TestZone.BLOCKED).status == "NXDOMAIN"
    assert eventually(lambda: server.metric("filterdns_dnstap_dropped_total") >= 2 + 40 * 2 - 8)
    assert server.metric("filterdns_dnstap_queued") <= 8
    second = collectors(str(sock), name="second")
    assert eventually(_connected(server), timeout=10)
    assert server.metric("filterdns_dnstap_connections_total") == 2
    assert server.dig(TestZone.MAIL).status == "NOERROR"
    assert eventually(lambda: len(_of(second.documents(), "CLIENT_RESPONSE", TestZone.MAIL)) == 1)


def test_stalled_collector_never_stalls_answers(
    tmp_path: Path, collectors: Callable[..., Collector], filterdns_on_nsd: Callable[...,
    ServerProcess],
) -> None:  # fmt: skip
    """A collector that stops reading (SIGSTOP) fills the socket: the writer thread waits
    on it, the queue fills and drops, and answers go on at their usual pace."""
    sock = tmp_path / "dnstap.sock"
    collector = collectors(str(sock))
    server = filterdns_on_nsd(_dnstap({"socket": str(sock)}, queue_size=64))
    assert eventually(_connected(server))
    collector.proc.send_signal(signal.SIGSTOP)
    try:
        slowest = 0.0
        # Far more than the socket's buffer holds (a message is about 150 bytes).
        for i in range(3000):
            started = time.monotonic()
            reply = server.query(TestZone.BLOCKED if i % 2 else TestZone.WWW, timeout=1.0)
            slowest = max(slowest, time.monotonic() - started)
            assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
        assert slowest < 0.5
        assert server.metric("filterdns_dnstap_dropped_total") > 0
    finally:
        collector.proc.send_signal(signal.SIGCONT)
    assert server.dig(TestZone.MAIL).status == "NOERROR"
    assert eventually(
        lambda: len(_of(collector.documents(), "CLIENT_RESPONSE", TestZone.MAIL)) == 1,
        timeout=15,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('socket = "a.sock"\naddress = "127.0.0.1:6000"', "dnstap.socket: set either socket"),
        ('messages = ["client_query", "client_query"]', "dnstap.messages: a message type"),
        ('messages = ["auth_query"]', "dnstap.messages"),
        ('address = "localhost:6000"', "dnstap.address"),
    ],
)
def test_config_errors(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[dnstap]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_config_relative_socket(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[dnstap]\nsocket = "tap.sock"\n')
    config = load_config(path).dnstap
    assert config.enabled
    assert config.socket == str(tmp_path / "tap.sock")
    assert config.messages == ("client_query", "client_response")


def test_a_miss_forwarded_by_c_yields_the_four_messages_with_the_upstream(
    tmp_path: Path, collectors: Callable[..., Collector], filterdns_on_nsd: Callable[...,
    ServerProcess], nsd_upstream: NsdServer,
) -> None:  # fmt: skip
    sock = tmp_path / "dnstap.sock"
    collector = collectors(str(sock))
    server = filterdns_on_nsd(_dnstap({"socket": str(sock)}, messages=ALL_MESSAGES))
    assert eventually(_connected(server))
    assert server.dig(TestZone.MAIL).status == "NOERROR"
    # C forwarded it and answered: no miss went to the Python chain.
    assert server.metric("filterdns_fastpath_answers_total") == 1
    assert server.metric("filterdns_fastpath_fallbacks_total", reason="miss") == 0
    assert eventually(lambda: len(_questions(collector.documents())) == 4)
    docs = collector.documents()
    (cq,) = _of(docs, "CLIENT_QUERY", TestZone.MAIL)
    (cr,) = _of(docs, "CLIENT_RESPONSE", TestZone.MAIL)
    (fq,) = _of(docs, "FORWARDER_QUERY", TestZone.MAIL)
    (fr,) = _of(docs, "FORWARDER_RESPONSE", TestZone.MAIL)
    assert cq["query_address"] == cr["query_address"] == "127.0.0.0"
    for message in (fq, fr):
        assert message["socket_protocol"] == "UDP"
        assert message["response_address"] == LOOPBACK
        assert int(message["response_port"]) == nsd_upstream.port
        assert "query_address" not in message
    # The query C built (our OPT, RD kept) and NSD's authoritative answer to it.
    assert "flags: rd" in fq["query_message"] and "OPT PSEUDOSECTION" in fq["query_message"]
    assert "response_message" not in fq
    assert "flags: qr aa rd" in fr["response_message"]
    assert f"IN\tA\t{TestZone.MAIL_A}" in fr["response_message"]
    assert fr["response_time"] >= fr["query_time"] == fq["query_time"]
    assert cq["query_time"] <= fq["query_time"] <= fr["response_time"] <= cr["response_time"]


def test_a_forwarding_rules_upstream_writes_forwarder_messages(
    tmp_path: Path, collectors: Callable[..., Collector], filterdns_on_nsd: Callable[...,
    ServerProcess], make_fault_upstream: Callable[..., FaultUpstream],
) -> None:  # fmt: skip
    corp = make_fault_upstream(answer_ip="192.0.2.77")
    sock = tmp_path / "dnstap.sock"
    collector = collectors(str(sock))
    server = filterdns_on_nsd(
        {
            **_dnstap({"socket": str(sock)}, messages=["forwarder_query", "forwarder_response"]),
            "forward": [{"domains": ["corp.example"], "servers": [corp.upstream]}],
        }
    )
    assert eventually(_connected(server))
    name = "intranet.corp.example."
    assert server.dig(name).rdata("A") == [corp.answer_ip]
    assert eventually(lambda: len(_questions(collector.documents())) == 2)
    docs = collector.documents()
    (fq,) = _of(docs, "FORWARDER_QUERY", name)
    (fr,) = _of(docs, "FORWARDER_RESPONSE", name)
    for message in (fq, fr):
        assert message["response_address"] == LOOPBACK
        assert int(message["response_port"]) == corp.port


@pytest.mark.parametrize(
    ("transport", "fast_path"),
    [("dot", True), ("dot", False), ("doh", True)],
    ids=["dot-relayed-from-c", "dot-python", "doh-relayed-from-c"],
)
def test_forwarder_messages_name_an_encrypted_upstreams_transport(
    tmp_path: Path, collectors: Callable[..., Collector],
    start_filterdns: Callable[..., ServerProcess], make_unbound: Callable[[], UnboundTls],
    test_ca: TestCa, nsd_upstream: NsdServer, transport: str, fast_path: bool,
) -> None:  # fmt: skip
    unbound = make_unbound()
    sock = tmp_path / "dnstap.sock"
    collector = collectors(str(sock))
    if transport == "dot":
        config = encrypted_config([unbound.dot()], test_ca, fast_path)
        port = unbound.dot_port
    else:
        config = encrypted_config(
            [unbound.doh()], test_ca, fast_path, bootstrap=[nsd_upstream.upstream]
        )
        port = unbound.doh_port
    server = start_filterdns(
        {**config, **_dnstap({"socket": str(sock)}, messages=ALL_MESSAGES)}
    )
    assert eventually(_connected(server))
    # The first query also looks up a DoH upstream's address (its bootstrap).
    assert server.dig(TestZone.WWW).rdata("A") == [TestZone.WWW_A]
    assert server.dig(TestZone.MAIL).rdata("A") == [TestZone.MAIL_A]
    assert server.metric("filterdns_fastpath_answers_total") == (2 if fast_path else 0)
    assert eventually(lambda: len(_of(collector.documents(), "FORWARDER_RESPONSE",
                                      TestZone.MAIL)) == 1)  # fmt: skip
    docs = collector.documents()
    (fq,) = _of(docs, "FORWARDER_QUERY", TestZone.MAIL)
    (fr,) = _of(docs, "FORWARDER_RESPONSE", TestZone.MAIL)
    for message in (fq, fr):
        assert message["socket_protocol"] == transport.upper()
        assert message["response_address"] == LOOPBACK
        assert int(message["response_port"]) == port
    assert f"IN\tA\t{TestZone.MAIL_A}" in fr["response_message"]
    # The client's side is plain UDP still.
    (cr,) = _of(docs, "CLIENT_RESPONSE", TestZone.MAIL)
    assert cr["socket_protocol"] == "UDP"

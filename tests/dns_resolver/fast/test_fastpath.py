"""The C UDP fast path: answers it gives itself, what it hands to Python, reloads, workers.

The integration tests under tests/dns_resolver/ run with the fast path on (the default) and
check the answers; these check that the fast path is really the one answering, that its
answers equal the Python chain's, and its own behaviour (TTL ageing, 0x20 case, EDE, TC,
reloads, worker processes sharing one snapshot).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from dns_resolver import wire
from dns_resolver.fast import fastpath
from dns_resolver.steps.cache import Cache
from filtercore import ListSpec, Matcher
from tests.dns_resolver.harness import (
    LOOPBACK,
    InProcessServer,
    NsdServer,
    ServerProcess,
    TestZone,
    query,
    sample_value,
    scrape,
    write_list,
)

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="fast path not built")

Z = TestZone


def _answers(server: ServerProcess) -> float:
    return server.metric("filterdns_fastpath_answers_total")


def _fallbacks(server: ServerProcess, reason: str) -> float:
    return server.metric("filterdns_fastpath_fallbacks_total", reason=reason)


def _raw(port: int, msg: dns.message.Message) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.sendto(msg.to_wire(), (LOOPBACK, port))
        return s.recv(65535)


def test_cache_hit_is_answered_in_c_with_aged_ttl_and_client_case(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd()
    first = server.query(Z.WWW)
    assert first.answer[0].ttl == Z.TTL
    # The miss was forwarded, cached and answered from C too (fastforward.py).
    assert _fallbacks(server, "miss") == 0
    assert _answers(server) == 1
    assert server.metric("filterdns_queries_total", qtype="A", protocol="udp",
                         result="allowed") == 1
    before = _answers(server)
    time.sleep(1.1)
    mixed = "wWw.FilterDNS.TeSt."
    msg = dns.message.make_query(mixed, "A", use_edns=0, payload=1232)
    msg.id = 0xBEEF
    msg.flags &= ~dns.flags.RD
    reply = dns.message.from_wire(_raw(server.port, msg))
    assert reply.id == 0xBEEF
    assert not reply.flags & dns.flags.RD and reply.flags & dns.flags.RA
    assert reply.question[0].name.to_text() == mixed  # the client's letter case (0x20)
    assert reply.answer[0].name.to_text() == mixed  # owner is a pointer to the question
    assert Z.TTL - 2 <= reply.answer[0].ttl <= Z.TTL - 1
    assert reply.edns == 0 and reply.payload == 1232
    assert _answers(server) == before + 1
    assert _fallbacks(server, "miss") == 0
    assert server.metric("filterdns_queries_total", qtype="A", protocol="udp",
                         result="cached") == 1


def test_block_is_answered_in_c_after_python_taught_it_the_ede(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd()
    first = _raw(server.port, dns.message.make_query(Z.BLOCKED_SUB, "A", use_edns=0))
    assert _fallbacks(server, "new_block") == 1
    before = _answers(server)
    second_msg = dns.message.make_query(Z.BLOCKED_SUB, "A", use_edns=0)
    second = _raw(server.port, second_msg)
    assert _answers(server) == before + 1
    assert _fallbacks(server, "new_block") == 1
    # Byte for byte what Python answered, except the ID.
    assert second[2:] == first[2:]
    reply = dns.message.from_wire(second)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    text = server.dig(Z.BLOCKED_SUB).ede_text
    assert "category=adult" in text and "list=test" in text
    # Without EDNS there is no OPT (and no EDE), still from C.
    plain = dns.message.from_wire(
        _raw(server.port, dns.message.make_query(Z.BLOCKED_SUB, "AAAA", use_edns=False))
    )
    assert plain.rcode() == dns.rcode.NXDOMAIN and plain.edns == -1
    assert server.metric("filterdns_blocks_total", category="adult", list="test") == 4
    assert server.metric("filterdns_queries_total", qtype="A", protocol="udp",
                         result="blocked") == 3


def test_truncation_is_per_client_and_never_cached(
    filterdns_on_nsd: Callable[..., ServerProcess],
) -> None:
    server = filterdns_on_nsd()
    full = query(server.port, Z.BIGTXT, "TXT", tcp=True)  # over 1232 bytes: cached from TCP
    assert len(full.answer[0][0].strings) == len(Z.BIGTXT_STRINGS)
    before = _answers(server)
    for options in ({"payload": 4096}, {"edns": None}):
        small = query(server.port, Z.BIGTXT, "TXT", **options)  # type: ignore[arg-type]
        assert small.flags & dns.flags.TC and not small.answer
        assert small.question[0].name.to_text() == Z.BIGTXT
    assert _answers(server) == before + 2  # truncated in C, from the full cached answer
    again = query(server.port, Z.BIGTXT, "TXT", tcp=True)
    assert len(again.answer[0][0].strings) == len(Z.BIGTXT_STRINGS)
    assert server.metric("filterdns_upstream_queries_total") == 1


def test_policies_pick_mask_and_punt_names_in_c(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    """Per-client policies (docs/policy-fastpath-contract.md): the source address picks the
    policy and its mask in C; the policy's punt names (bypass canaries) go to Python."""
    child = "127.0.0.2"
    adult = write_list(tmp_path, [Z.BLOCKED.rstrip(".")], "adult.txt")
    server = start_filterdns(
        {
            "lists": [{"path": str(adult), "category": "adult"}],
            "policies": {
                "child": {"clients": [f"{child}/32"], "block": ["adult"]},
                "default": {"block": []},
            },
        },
        upstreams=[nsd_upstream.upstream],
    )
    for _ in range(2):  # learnt by Python, then answered in C
        assert query(server.port, Z.BLOCKED, source=child).rcode() == dns.rcode.NXDOMAIN
        assert query(server.port, Z.BLOCKED).rcode() == dns.rcode.NOERROR  # default policy
    before, punted = _answers(server), _fallbacks(server, "policy")
    assert query(server.port, Z.BLOCKED, source=child).rcode() == dns.rcode.NXDOMAIN
    assert query(server.port, Z.BLOCKED).rcode() == dns.rcode.NOERROR
    assert _answers(server) == before + 2
    query(server.port, "use-application-dns.net", source=child)  # a canary: Python decides
    query(server.port, "x.mask.icloud.com", source=child)  # below a canary too
    assert _fallbacks(server, "policy") == punted + 2


def test_truncated_upstream_answers_are_not_mirrored() -> None:
    stored: list[object] = []

    class Mirror:
        def store(self, key: object, entry: object) -> None:
            stored.append(key)

        def discard(self, key: object) -> None:
            pass

        def clear(self) -> None:
            stored.clear()

    cache = Cache()
    cache.mirror = Mirror()
    question = wire.encode_name("a.example") + b"\x00\x01\x00\x01"
    answer = wire.rr(wire.QNAME_POINTER, wire.TYPE_A, 60, b"\x01\x02\x03\x04")
    for flags, rcode in ((wire.QR | wire.TC, 0), (wire.QR, wire.SERVFAIL)):
        body = wire.header(0, flags | rcode, 1, 1, 0, 0) + question + answer
        assert cache.store(("a.example", 1, 1, False), body) is None
    assert stored == []
    body = wire.header(0, wire.QR, 1, 1, 0, 0) + question + answer
    assert cache.store(("a.example", 1, 1, False), body) is not None
    assert stored == [("a.example", 1, 1, False)]


def test_sighup_swaps_the_lists_in_the_c_loop(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    listfile = write_list(tmp_path, ["blocked.filterdns.test"], "l.txt")
    snap = tmp_path / "lists.snap"
    _compile(listfile, snap)
    server = start_filterdns(
        {"server": {"workers": 1}}, ["--snapshot", str(snap)], upstreams=[nsd_upstream.upstream]
    )
    for _ in range(2):  # learnt, then answered in C
        assert server.query(Z.BLOCKED).rcode() == dns.rcode.NXDOMAIN
        assert server.query(Z.WWW).rcode() == dns.rcode.NOERROR
    before = _answers(server)
    write_list(tmp_path, ["www.filterdns.test"], "l.txt")
    _compile(listfile, snap)
    server.send_signal(signal.SIGHUP)
    _wait(lambda: server.metric("filterdns_list_reloads_total", result="success") == 1)
    for _ in range(2):
        assert server.query(Z.WWW).rcode() == dns.rcode.NXDOMAIN
        assert server.query(Z.BLOCKED).rcode() == dns.rcode.NOERROR
    # The second round was answered in C: the new block, and the new cache entry.
    assert _answers(server) >= before + 2


def test_hot_path_builds_no_python_dns_objects(
    nsd_upstream: NsdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cached and blocked answers come from C: counted constructors stay at zero."""
    listfile = write_list(tmp_path, ["blocked.filterdns.test"], "l.txt")
    matcher = Matcher.from_lists([ListSpec(str(listfile), category="adult", name="test")])
    with InProcessServer(matcher, [nsd_upstream.upstream]) as (port, server):
        for _ in range(2):
            assert query(port, Z.WWW).rcode() == dns.rcode.NOERROR
            assert query(port, Z.BLOCKED_SUB).rcode() == dns.rcode.NXDOMAIN
        built: list[str] = []
        import dnslib

        for cls in (wire.Query, wire.Edns, dnslib.DNSRecord, dnslib.DNSHeader,
                    dnslib.DNSQuestion, dnslib.RR):
            original = cls.__init__

            def counting(self: object, *a: object, _o: object = original,
                         _n: str = cls.__name__, **k: object) -> None:
                built.append(_n)
                _o(self, *a, **k)  # type: ignore[operator]

            monkeypatch.setattr(cls, "__init__", counting)
        fp = server.fast.fp
        answers, fallbacks = fp.fast_answers, fp.python_fallbacks
        for _ in range(50):
            assert query(port, Z.WWW).rcode() == dns.rcode.NOERROR
            assert query(port, Z.BLOCKED_SUB).rcode() == dns.rcode.NXDOMAIN
        assert built == []
        assert fp.fast_answers == answers + 100
        assert fp.python_fallbacks == fallbacks
        # A miss is forwarded from C: nothing built either.
        assert query(port, Z.MAIL).rcode() == dns.rcode.NOERROR
        assert built == []
        assert fp.fast_answers == answers + 101
        # Over TCP a cache hit is answered in C too (the stream loop) ...
        assert query(port, Z.MAIL, tcp=True).rcode() == dns.rcode.NOERROR
        assert built == []
        # ... and the check is live: a TCP miss goes through Python and builds a Query.
        assert query(port, Z.TXT, "TXT", tcp=True).rcode() == dns.rcode.NOERROR
        assert "Query" in built


def test_two_workers_share_one_snapshot_and_stop_cleanly(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    listfile = write_list(tmp_path, [f"site{i}.example" for i in range(20000)], "l.txt")
    snap = tmp_path / "lists.snap"
    _compile(listfile, snap)
    server = start_filterdns(
        {"server": {"workers": 2}}, ["--snapshot", str(snap)], upstreams=[nsd_upstream.upstream]
    )
    children = _children(server.pid)
    assert len(children) == 2
    for i in range(200):  # enough queries that both workers answer some
        assert server.query(f"x.site{i}.example").rcode() == dns.rcode.NXDOMAIN
        assert server.query(Z.WWW).rcode() == dns.rcode.NOERROR
    inodes = set()
    for pid in children:
        maps = _mappings(pid, str(snap))
        assert maps, f"worker {pid} does not map the snapshot"
        for inode, fields in maps:
            inodes.add(inode)
            assert fields.get("Private_Dirty", 0) == 0  # never copied into the worker
            assert fields.get("Anonymous", 0) == 0
    assert len(inodes) == 1  # one file, one copy in the page cache
    # Metrics from both workers add up in the parent's /metrics.
    text = scrape(LOOPBACK, server.metrics_port)
    assert sample_value(text, "filterdns_queries_total", qtype="A", protocol="udp",
                        result="blocked") == 200
    assert sample_value(text, "filterdns_list_entries") == 20000  # not summed
    server.send_signal(signal.SIGHUP)
    _wait(lambda: sample_value(scrape(LOOPBACK, server.metrics_port),
                               "filterdns_list_reloads_total", result="success") == 2)
    assert server.stop() == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()


def test_workers_that_cannot_start_stop_the_parent(tmp_path: Path) -> None:
    """A worker that never serves (its port is taken) is not restarted in a loop."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOPBACK, 0))
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            f'[server]\nlisten = ["{LOOPBACK}:{port}"]\nworkers = 2\n'
            f'[upstream]\nservers = ["{LOOPBACK}:9"]\n[metrics]\nlisten = ""\n'
        )
        done = subprocess.run(
            [sys.executable, "-m", "filterdns", "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    assert "failed to start" in done.stderr


def test_workers_config_is_validated(tmp_path: Path) -> None:
    from fdconfig import ConfigError, load_config

    path = tmp_path / "c.toml"
    for bad in ('"many"', "0", "true"):
        path.write_text(f"[server]\nworkers = {bad}\n")
        with pytest.raises(ConfigError, match="workers"):
            load_config(str(path))
    path.write_text('[server]\nworkers = "auto"\n')
    assert load_config(str(path)).server.workers == len(os.sched_getaffinity(0))


# -- helpers ---------------------------------------------------------------------------------


def _compile(listfile: Path, snap: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "filterdns", "compile", "--list", f"{listfile}:adult",
         "-o", str(snap)],
        check=True, capture_output=True, timeout=60,
    )


def _wait(ok: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _children(pid: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(text) >= 2:
            return [int(p) for p in text]
        time.sleep(0.05)
    raise AssertionError("workers did not start")


def _mappings(pid: int, path: str) -> list[tuple[str, dict[str, int]]]:
    """(inode, smaps fields in kB) of every mapping of `path` in process `pid`."""
    out: list[tuple[str, dict[str, int]]] = []
    current: dict[str, int] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$", line)
        if head:
            current = None
            if head.group(2) == path:
                current = {}
                out.append((head.group(1), current))
            continue
        if current is not None and ":" in line:
            key, value = line.split(":", 1)
            parts = value.split()
            if parts and parts[0].isdigit():
                current[key] = int(parts[0])
    return out


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    extra = [t for t in threading.enumerate() if t not in before and t.is_alive()
             and not t.daemon]
    assert extra == []


@pytest.mark.parametrize("anonymize", ["truncate", "none"])
def test_query_log_lines_from_c_equal_pythons(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path, anonymize: str
) -> None:
    """With the query log on, C answers and writes the lines Python would have written."""
    logs = {}
    for fast in (True, False):
        path = tmp_path / f"{anonymize}-{fast}.jsonl"
        server = filterdns_on_nsd({
            "server": {"fast_path": fast},
            "querylog": {"enabled": True, "path": str(path), "anonymize": anonymize},
        })
        for name, rdtype in ((Z.WWW, "A"), (Z.WWW, "A"), (Z.BLOCKED, "A"), (Z.BLOCKED, "A"),
                             (Z.BLOCKED_SUB, "AAAA"), ("MX.filterdns.TEST.", "MX"),
                             (Z.NXDOMAIN, "TYPE65000")):
            server.dig(name, rdtype)
        if fast:
            assert _answers(server) >= 5  # forwarded, cached and blocked in C
        server.stop()
        logs[fast] = [json.loads(line) for line in path.read_text().splitlines()]
    for entry in logs[True] + logs[False]:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("timestamp"))
        assert isinstance(entry.pop("duration_ms"), float)
    assert logs[True] == logs[False]
    assert [e["result"] for e in logs[True]] == [
        "allowed", "cached", "blocked", "blocked", "blocked", "allowed", "allowed"
    ]
    assert logs[True][6]["qtype"] == "65000" and logs[True][5]["qname"] == "mx.filterdns.test"


def test_query_log_pseudonyms_match_between_c_and_python(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    path = tmp_path / "hash.jsonl"
    server = filterdns_on_nsd({"querylog": {"enabled": True, "path": str(path),
                                            "anonymize": "hash"}})
    server.dig(Z.WWW, "A")  # UDP: written by C
    query(server.port, Z.MAIL, "A", tcp=True)  # TCP: written by Python
    server.stop()
    clients = [json.loads(line)["client"] for line in path.read_text().splitlines()]
    assert len(clients) == 2 and clients[0] == clients[1]
    assert re.fullmatch(r"[0-9a-f]{16}", clients[0]) and clients[0] != "127.0.0.1"

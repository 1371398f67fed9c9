"""The console's query-log writer process against a real `filterdns serve` (NSD upstream,
dig and dnspython from loopback sources): it is a process of its own, started again with
its counts when it dies, and when it is behind (stopped with SIGSTOP: fault injection,
with a small hand-over backlog) the serving process still answers every query, drops the
rows and counts them, and the overview's counts stay equal to the queries sent."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import pytest

from benchmarks.load.servers import proc_tree, writer_pids
from dns_resolver.observability.querywriter import BACKLOG_ENV
from tests.dns_resolver.harness import ServerProcess, eventually, to_toml
from tests.reports.test_console_e2e import BLOCKED, CHILD, WWW, Api, console_config


def writers(server: ServerProcess) -> list[int]:
    """The pids of the server's query-log writer processes."""
    return writer_pids(proc_tree(server.pid))


def overview(admin: Api) -> dict:
    return admin.get("/api/stats", window="1h").json()


def test_the_writer_is_its_own_process_and_starts_again_with_its_counts(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = filterdns_on_nsd(console_config(tmp_path))
    admin = Api(server, "admin")
    for _ in range(2):
        assert server.dig(WWW, "A", "-b", CHILD).status == "NOERROR"
    assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"
    assert eventually(lambda: overview(admin).get("queries") == 3, 5)
    (first,) = writers(server)
    assert first != server.pid

    os.kill(first, signal.SIGKILL)
    assert eventually(lambda: len(writers(server)) == 1 and writers(server) != [first], 5)
    assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"
    # The new writer started from the counts the first one published.
    assert eventually(lambda: overview(admin).get("queries") == 4, 5)
    stats = overview(admin)
    assert stats["by_result"] == {"allowed": 1, "cached": 1, "blocked": 2}
    assert stats["by_policy"] == {"child": 4}
    rows = admin.get("/api/querylog", result="blocked").json()["rows"]
    assert len(rows) == 2 and all(r["rule"] and r["policy"] == "child" for r in rows)


def test_a_writer_behind_never_delays_answers_and_its_dropped_rows_are_counted(
    filterdns_on_nsd: Callable[..., ServerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BACKLOG_ENV, "4096")  # a pipe and a backlog of ~20 rows each
    server = filterdns_on_nsd(console_config(tmp_path))
    admin = Api(server, "admin")
    port = int(server.config["server"]["listen"][0].rsplit(":", 1)[1])
    (writer,) = writers(server)
    os.kill(writer, signal.SIGSTOP)
    sent = 600
    try:
        for i in range(sent):
            name = BLOCKED if i % 3 == 0 else WWW
            query = dns.message.make_query(name, "A")
            answer = dns.query.udp(query, "127.0.0.1", port=port, source=CHILD, timeout=2)
            assert answer.rcode() == (3 if name == BLOCKED else 0)
        assert eventually(
            lambda: server.metric("filterdns_console_rows_dropped_total", stage="handover") > 0,
            5,
        )
    finally:
        os.kill(writer, signal.SIGCONT)
    # Every query is counted, by result, whether its row was written or dropped.
    assert eventually(lambda: overview(admin).get("queries") == sent, 10)
    stats = overview(admin)
    assert stats["by_result"] == {"blocked": 200, "allowed": 1, "cached": 399}
    assert stats["blocked"] == 200
    dropped = stats["rows"]["handover_dropped"]
    assert dropped == server.metric("filterdns_console_rows_dropped_total", stage="handover")
    assert 0 < dropped < sent and stats["rows"]["store_written"] == sent - dropped


def listening_inode(port: int) -> str:
    """The socket inode of the TCP listener on `port` (/proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return fields[9]
    raise AssertionError(f"nothing listens on TCP port {port}")


def other_worker(server: ServerProcess) -> int | None:
    """The pid of the worker that does not serve the admin listener (worker 1 of 2), or
    None while there is not exactly one such worker running (being restarted)."""
    admin_port = int(server.config["admin"]["listen"].rsplit(":", 1)[1])
    holder = f"socket:[{listening_inode(admin_port)}]"
    others = []
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
        children = f.read().split()
    for pid in children:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # gone meanwhile
        # A worker holds sockets (the supervisor's other child, the list reloader, none).
        if any(link.startswith("socket:") for link in links) and holder not in links:
            others.append(int(pid))
    return others[0] if len(others) == 1 else None


def test_a_restarted_worker_keeps_its_counts(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = console_config(tmp_path)
    config["server"]["workers"] = 2
    config["policies"] = {"child": {"clients": ["127.0.0.0/26"], "block": ["adult"]}}
    server = filterdns_on_nsd(config)
    admin = Api(server, "admin")
    clients = [f"127.0.0.{i}" for i in range(10, 40)]

    def a_round() -> None:
        for client in clients:  # their queries reach both workers (kernel's hash)
            assert server.dig(BLOCKED, "A", "-b", client).status == "NXDOMAIN"

    a_round()
    assert eventually(lambda: overview(admin).get("queries") == len(clients), 10)
    worker = other_worker(server)
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    # The supervisor starts it again.
    assert eventually(lambda: other_worker(server) not in (None, worker), 10)
    a_round()
    # The restarted worker's writer started from its predecessor's counts.
    assert eventually(lambda: overview(admin).get("queries") == 2 * len(clients), 10)
    stats = overview(admin)
    assert stats["blocked"] == 2 * len(clients) and stats["by_policy"] == {"child": 60}


def test_a_new_querylog_config_gets_a_new_writer_after_the_old_one(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A reload that changes `[querylog]` hands the rows to a new writer with the new
    settings once the old one has written its own: the counts carry on."""
    server = filterdns_on_nsd(console_config(tmp_path))
    admin = Api(server, "admin")
    assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"
    assert eventually(lambda: overview(admin).get("queries") == 1, 5)
    (first,) = writers(server)
    config = dict(server.config)
    config["querylog"] = {**config["querylog"], "anonymize": "hash"}
    server.config_path.write_text(to_toml(config), encoding="utf-8")
    server.send_signal(signal.SIGHUP)
    assert eventually(lambda: writers(server) not in ([], [first]), 5)
    assert server.dig(BLOCKED, "A", "-b", CHILD).status == "NXDOMAIN"
    assert eventually(lambda: overview(admin).get("queries") == 2, 5)
    rows = admin.get("/api/querylog", result="blocked").json()["rows"]  # newest first
    assert [r["policy"] for r in rows] == ["child", "child"]
    assert rows[1]["client"] == CHILD and len(rows[0]["client"]) == 16
    text = (tmp_path / "q.log").read_text()
    assert text.count(CHILD) == 1 and text.count(rows[0]["client"]) == 1

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

from dns_resolver.observability.querywriter import BACKLOG_ENV, PROCESS_NAME
from tests.dns_resolver.harness import ServerProcess, eventually
from tests.reports.test_console_e2e import BLOCKED, CHILD, WWW, Api, console_config


def writers(server: ServerProcess) -> list[int]:
    """The pids of the server's query-log writer processes."""
    out = []
    for task in os.listdir(f"/proc/{server.pid}/task"):
        with open(f"/proc/{server.pid}/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/comm") as comm:
                        if comm.read().strip() == PROCESS_NAME:
                            out.append(int(pid))
                except FileNotFoundError:
                    continue
    return out


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

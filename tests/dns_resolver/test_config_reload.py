"""SIGHUP and POST /api/reload re-read the whole configuration file on a running server.

Real `filterdns serve` processes (one process, and `workers = 2`) against NSD or a fault
upstream, queried with dig. The file is rewritten, the server signalled, and each change
must show in answers within 2 s; a file that does not validate changes nothing and is
counted as rejected; a changed listen address is logged as needing a restart while the
rest applies.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode
import httpx
import pytest

from tests.dns_resolver.harness import (
    REPO_ROOT,
    DigResult,
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    eventually,
    free_port,
    query,
    to_toml,
)
from tests.reports.conftest import filterdns_cli

pytestmark = pytest.mark.timeout(120)

APPLY_TIMEOUT = 2.0  # the bound: a reload shows in answers within 2 s
# The list reloader (server.data_dir) compiles in a child process it spawns: seconds more.
LIST_REFRESH_TIMEOUT = 30.0
WWW = TestZone.WWW.rstrip(".")
OTHER_CLIENT = "127.0.0.2"
GAMBLING_LIST = REPO_ROOT / "lists" / "default" / "ut1" / "gambling" / "domains"
CASINO = "bet365.com"  # in the bundled UT1 gambling list
PRINTER_A = "192.168.1.9"
# dig asks each time from a new source port, so the kernel spreads the queries over the
# workers (SO_REUSEPORT): several answers per check reach every worker.
ASKS = 8

WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])


def _ask(server: ServerProcess, name: str, *opts: str) -> DigResult:
    return server.dig(name, "A", "+tries=1", "+time=1", *opts)


def _always(server: ServerProcess, want: Callable[[DigResult], bool], name: str,
            *opts: str) -> bool:
    """True when `ASKS` answers in a row all satisfy `want`."""
    return all(want(_ask(server, name, *opts)) for _ in range(ASKS))


def _applied(server: ServerProcess, want: Callable[[DigResult], bool], name: str,
             *opts: str) -> bool:
    return eventually(lambda: _always(server, want, name, *opts), timeout=APPLY_TIMEOUT)


def _rewrite(server: ServerProcess, config: Mapping[str, Any]) -> None:
    """Write `config` over the server's file and send SIGHUP."""
    server.config_path.write_text(to_toml(config), encoding="utf-8")
    server.send_signal(signal.SIGHUP)


def _with(config: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    """A copy of `config` with whole sections replaced (None removes one)."""
    out = {k: v for k, v in config.items() if k not in sections}
    out.update({k: v for k, v in sections.items() if v is not None})
    return out


def _reloads(server: ServerProcess, result: str) -> float:
    return server.metric("filterdns_config_reloads_total", result=result)


def _refused(result: DigResult) -> bool:
    return result.status == "REFUSED"


def _www_from_nsd(result: DigResult) -> bool:
    return result.status == "NOERROR" and result.rdata("A") == [TestZone.WWW_A]


def _gambling_block(result: DigResult) -> bool:
    return result.status == "NXDOMAIN" and "category=gambling" in result.ede_text


@pytest.fixture
def start(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> Callable[..., ServerProcess]:
    """Start a server with `workers` processes on NSD with the test blocklist (`sections`
    replace those), and wait until `ready(dig www)` holds (None: until it answers at all)."""

    def run(
        workers: int, ready: Callable[[DigResult], bool] | None = _www_from_nsd,
        **sections: Any,
    ) -> ServerProcess:
        blocklist = tmp_path / "block.txt"
        blocklist.write_text("\n".join(TestZone.BLOCKLIST) + "\n", encoding="utf-8")
        config: dict[str, Any] = {
            "server": {"workers": workers},
            "upstream": {"servers": [nsd_upstream.upstream], "timeout": 0.5},
            "lists": [{"path": str(blocklist), "name": "test", "category": "adult"}],
        }
        config.update(sections)
        server = start_filterdns(config)
        if ready is not None:
            assert _applied(server, ready, WWW), server.stderr_text()
        return server

    return run


@WORKERS
def test_a_policy_starts_blocking_gambling(
    start: Callable[..., ServerProcess], workers: int
) -> None:
    assert CASINO in GAMBLING_LIST.read_text(encoding="utf-8").split()
    lists = [
        {"path": "block.txt", "name": "test", "category": "adult"},
        {"path": str(GAMBLING_LIST), "name": "ut1-gambling", "category": "gambling"},
    ]
    server = start(workers, lists=lists, policies={"default": {"block": ["adult"]}})
    # NSD serves no such zone (whatever it answers), but the name is not blocked here.
    assert _always(server, lambda r: not _gambling_block(r), CASINO)
    assert _ask(server, TestZone.BLOCKED).status == "NXDOMAIN"

    _rewrite(server, _with(server.config, policies={"default": {"block": ["adult", "gambling"]}}))
    assert _applied(server, _gambling_block, CASINO), server.stderr_text()
    assert _always(server, lambda r: r.status == "NXDOMAIN", TestZone.BLOCKED)
    assert _always(server, _www_from_nsd, WWW)
    assert _reloads(server, "applied") == 1 and _reloads(server, "rejected") == 0


@pytest.mark.parametrize(
    ("workers", "data_dir", "timeout"),
    [(1, "", APPLY_TIMEOUT), (2, "", APPLY_TIMEOUT), (2, "state", LIST_REFRESH_TIMEOUT)],
    ids=["one-process", "two-workers", "two-workers-reloader"],
)
def test_the_lists_of_the_new_file_are_loaded(
    start: Callable[..., ServerProcess], tmp_path: Path, workers: int, data_dir: str,
    timeout: float,
) -> None:
    server = start(workers, server={"workers": workers, "data_dir": data_dir})
    (tmp_path / "more.txt").write_text(f"{WWW}\n", encoding="utf-8")
    lists = [*server.config["lists"], {"path": "more.txt", "name": "more", "category": "adult"}]
    _rewrite(server, _with(server.config, lists=lists))
    assert eventually(
        lambda: server.metric("filterdns_list_entries", list="more") == 1, timeout=timeout
    ), server.stderr_text()
    assert _applied(server, lambda r: r.status == "NXDOMAIN", WWW), server.stderr_text()


@pytest.mark.parametrize(
    ("workers", "data_dir"),
    [(1, ""), (2, ""), (1, "state"), (2, "state")],
    ids=["one-process", "two-workers", "one-process-reloader", "two-workers-reloader"],
)
def test_an_acl_starts_refusing_a_client(
    start: Callable[..., ServerProcess], workers: int, data_dir: str
) -> None:
    # With data_dir the list reloader (a child process) rebuilds the snapshot after the
    # reload; the configuration does not wait for it.
    server = start(workers, server={"workers": workers, "data_dir": data_dir})
    assert _always(server, _www_from_nsd, WWW, "-b", OTHER_CLIENT)

    _rewrite(server, _with(server.config, access={"deny": [f"{OTHER_CLIENT}/32"]}))
    assert _applied(server, _refused, WWW, "-b", OTHER_CLIENT), server.stderr_text()
    assert _always(server, _www_from_nsd, WWW)  # 127.0.0.1 is still served


@WORKERS
def test_a_new_upstream_answers(
    start: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    nsd_upstream: NsdServer,
    workers: int,
) -> None:
    # The fault upstream answers every A with its answer_ip; the answers cached from it
    # must not outlive the switch to NSD.
    server = start(
        workers,
        upstream={"servers": [fault_upstream.upstream]},
        ready=lambda r: r.rdata("A") == [fault_upstream.answer_ip],
    )
    _rewrite(server, _with(server.config, upstream={"servers": [nsd_upstream.upstream]}))
    assert _applied(server, _www_from_nsd, WWW), server.stderr_text()
    assert server.metric("filterdns_upstream_healthy", upstream=nsd_upstream.upstream) == 1
    assert server.metric("filterdns_upstream_healthy", upstream=fault_upstream.upstream) == 0


@WORKERS
def test_a_new_local_record_and_forwarding_rule_apply(
    start: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
    workers: int,
) -> None:
    # NSD serves neither name: before the reload neither has these addresses.
    corp = make_fault_upstream(answer_ip="192.0.2.77")
    printer, corp_name = "printer.lan", "intranet.corp.example"
    server = start(workers)
    assert _ask(server, printer).rdata("A") != [PRINTER_A]
    assert _ask(server, corp_name).rdata("A") != [corp.answer_ip]
    _rewrite(
        server,
        _with(
            server.config,
            # The harness's `nodefault` stays: the test zone is below `test.`.
            local={**server.config["local"], "records": [f"{printer} 300 IN A {PRINTER_A}"]},
            forward=[{"domains": ["corp.example"], "servers": [corp.upstream]}],
        ),
    )
    assert _applied(server, lambda r: r.rdata("A") == [PRINTER_A], printer), (
        server.stderr_text()
    )
    assert _applied(server, lambda r: r.rdata("A") == [corp.answer_ip], corp_name), (
        server.stderr_text()
    )
    # The rule covers its domain only: the rest still goes to NSD.
    assert _always(server, _www_from_nsd, WWW)
    assert _reloads(server, "applied") == 1
    assert server.metric("filterdns_upstream_healthy", upstream=corp.upstream) == 1


@WORKERS
def test_queries_in_flight_go_to_the_new_upstream(
    start: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
    nsd_upstream: NsdServer,
    workers: int,
) -> None:
    silent = make_fault_upstream(mode="timeout")
    server = start(
        workers, upstream={"servers": [silent.upstream], "timeout": 10.0}, ready=None
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(_ask, server, WWW, "+time=8")
        assert eventually(lambda: silent.count == 1, timeout=APPLY_TIMEOUT)
        # The query waits on the silent upstream (for 10 s) when the file changes: it is
        # asked again of the new upstream, not failed with the old one.
        _rewrite(server, _with(server.config, upstream={"servers": [nsd_upstream.upstream]}))
        started = time.monotonic()
        answer = asked.result(timeout=10)
    assert _www_from_nsd(answer), (answer, server.stderr_text())
    assert time.monotonic() - started < APPLY_TIMEOUT
    assert silent.count == 1


@pytest.mark.parametrize("protocol", ["+tcp", "+notcp"], ids=["python-chain", "c-fast-path"])
def test_an_answer_in_flight_across_the_reload_is_not_cached(
    start: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
    tmp_path: Path,
    protocol: str,
) -> None:
    """A query asked under the old lists and answered after the new ones are in force is
    answered, but its answer is not cached: the next query is judged by the new lists.
    Over TCP the Python chain forwards it; over UDP the C fast path does, and hands it to
    the Python chain to be asked again when the lists are swapped (a changed configuration
    does that too, `UdpFastPath.reconfigure`)."""
    slow = make_fault_upstream(delay=1.0)
    more = tmp_path / "more.txt"
    more.write_text("other.example\n", encoding="utf-8")
    server = start(
        1,
        upstream={"servers": [slow.upstream], "timeout": 5.0},
        lists=[{"path": "more.txt", "name": "more", "category": "adult"}],
        ready=None,
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(_ask, server, WWW, protocol, "+time=4")
        assert eventually(lambda: slow.count == 1, timeout=APPLY_TIMEOUT)
        # The same configuration, a list that changed: only the lists are swapped.
        more.write_text(f"other.example\n{WWW}\n", encoding="utf-8")
        server.send_signal(signal.SIGHUP)
        assert eventually(
            lambda: server.metric("filterdns_list_entries", list="more") == 2,
            timeout=APPLY_TIMEOUT,
        ), server.stderr_text()
        before = asked.result(timeout=10)
    assert before.status in ("NOERROR", "NXDOMAIN"), before  # answered, old or new rules
    assert _always(server, lambda r: r.status == "NXDOMAIN", WWW)
    assert _always(server, lambda r: r.status == "NXDOMAIN", WWW, "+tcp")


@WORKERS
def test_a_broken_file_keeps_the_running_configuration(
    start: Callable[..., ServerProcess], workers: int
) -> None:
    server = start(workers, access={"deny": [f"{OTHER_CLIENT}/32"]})
    assert _always(server, _refused, WWW, "-b", OTHER_CLIENT)
    good = server.config

    # The ACL would open up, but the file does not validate: nothing of it applies.
    broken = _with(good, access=None, upstream={**good["upstream"], "strategy": "fast"})
    _rewrite(server, broken)
    expected = (
        f'{server.config_path}: upstream.strategy: must be "failover" or "parallel", '
        'got "fast"'
    )
    assert eventually(lambda: expected in server.stderr_text(), timeout=APPLY_TIMEOUT), (
        server.stderr_text()
    )
    assert "keeping the running configuration" in server.stderr_text()
    assert eventually(lambda: _reloads(server, "rejected") == 1, timeout=APPLY_TIMEOUT)
    assert _reloads(server, "applied") == 0
    # Each family once: with workers the parent's own counter replaces the workers'.
    families = [line for line in server.metrics_text().splitlines() if line.startswith("# HELP")]
    assert len(families) == len(set(families))
    assert _always(server, _refused, WWW, "-b", OTHER_CLIENT)
    assert _always(server, _www_from_nsd, WWW)

    # Fixed, the same change applies.
    _rewrite(server, _with(good, access=None))
    assert _applied(server, _www_from_nsd, WWW, "-b", OTHER_CLIENT), server.stderr_text()
    assert _reloads(server, "applied") == 1 and _reloads(server, "rejected") == 1


@WORKERS
def test_a_new_listen_address_needs_a_restart_the_rest_applies(
    start: Callable[..., ServerProcess], workers: int
) -> None:
    server = start(workers)
    moved = {**server.config["server"], "listen": [f"127.0.0.1:{free_port()}"]}
    _rewrite(server, _with(server.config, server=moved, access={"deny": [f"{OTHER_CLIENT}/32"]}))
    assert _applied(server, _refused, WWW, "-b", OTHER_CLIENT), server.stderr_text()
    lines = [
        line for line in server.stderr_text().splitlines() if "restart needed" in line
    ]
    assert len(lines) == 1, server.stderr_text()
    assert lines[0].endswith("config reload: restart needed for server.listen; kept as they were")
    assert _always(server, _www_from_nsd, WWW)  # still on the address it started with
    assert _reloads(server, "applied") == 1


def test_the_admin_api_reload_answers_with_the_result(
    start: Callable[..., ServerProcess],
) -> None:
    admin = f"127.0.0.1:{free_port()}"
    server = start(1, server={"data_dir": "data"}, admin={"enabled": True, "listen": admin})
    token = filterdns_cli(
        "admin", "token", "create", "--role", "admin", "--name", "ops",
        "--config", str(server.config_path),
    ).stdout.strip()

    def reload() -> dict[str, Any]:
        r = httpx.post(
            f"http://{admin}/api/reload", headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()

    good = server.config
    server.config_path.write_text(
        to_toml(_with(good, cache={"max_entries": "many"})), encoding="utf-8"
    )
    assert reload() == {
        "reloaded": False,
        "config": "rejected",
        "error": f"{server.config_path}: cache.max_entries: must be an integer, got a string",
    }
    assert _reloads(server, "rejected") == 1

    moved = {**good["server"], "listen": [f"127.0.0.1:{free_port()}"]}
    server.config_path.write_text(
        to_toml(_with(good, server=moved, access={"deny": [f"{OTHER_CLIENT}/32"]})),
        encoding="utf-8",
    )
    assert reload() == {
        "reloaded": True, "config": "applied", "restart_needed": ["server.listen"]
    }
    assert _always(server, _refused, WWW, "-b", OTHER_CLIENT)
    assert _reloads(server, "applied") == 1


def test_cache_query_log_and_logging_settings_apply_policies_go(
    start: Callable[..., ServerProcess], fault_upstream: FaultUpstream, tmp_path: Path
) -> None:
    def from_upstream(result: DigResult) -> bool:
        return result.rdata("A") == [fault_upstream.answer_ip]

    server = start(
        1,
        upstream={"servers": [fault_upstream.upstream]},
        policies={"default": {"block": ["adult"]}},
        ready=from_upstream,
    )
    asked = fault_upstream.count
    assert _always(server, from_upstream, WWW)
    assert fault_upstream.count == asked  # cached

    # No cache, no policies (every category of the lists blocks), a query log, JSON logs.
    _rewrite(
        server,
        _with(
            server.config,
            policies=None,
            cache={"enabled": False},
            querylog={"enabled": True, "path": "queries.log", "anonymize": "none"},
            logging={"format": "json"},
        ),
    )
    assert eventually(lambda: _reloads(server, "applied") == 1, timeout=APPLY_TIMEOUT)
    asked = fault_upstream.count
    assert _always(server, from_upstream, WWW)
    assert fault_upstream.count == asked + ASKS  # each one asked upstream
    assert _always(server, lambda r: r.status == "NXDOMAIN", TestZone.BLOCKED)
    log = tmp_path / "queries.log"
    assert eventually(
        lambda: log.is_file() and log.read_text().count(f'"qname":"{WWW}"') >= ASKS,
        timeout=APPLY_TIMEOUT,
    )
    lines = server.stderr_text().splitlines()
    applied = [line for line in lines if "configuration applied" in line]
    assert json.loads(applied[-1])["message"].startswith("configuration applied from")

    # The cache back on, without policies: answers are cached (in C) again.
    _rewrite(server, _with(server.config, policies=None, cache={"max_entries": 100}))
    assert eventually(lambda: _reloads(server, "applied") == 2, timeout=APPLY_TIMEOUT)
    asked = fault_upstream.count
    fast = server.metric("filterdns_fastpath_answers_total")
    assert _always(server, from_upstream, WWW)
    assert fault_upstream.count == asked + 1
    assert server.metric("filterdns_fastpath_answers_total") >= fast + ASKS - 1


@WORKERS
def test_a_query_log_that_cannot_be_opened_keeps_the_running_configuration(
    start: Callable[..., ServerProcess], workers: int
) -> None:
    server = start(workers)
    # Valid, but the query log cannot be opened (its folder is a file): nothing applies.
    _rewrite(
        server,
        _with(
            server.config,
            access={"deny": [f"{OTHER_CLIENT}/32"]},
            querylog={"enabled": True, "path": "block.txt/queries.log"},
        ),
    )
    assert eventually(lambda: _reloads(server, "rejected") == 1, timeout=APPLY_TIMEOUT)
    assert (
        f"keeping the running configuration: {server.config_path}: querylog.path: "
        f"{server.workdir / 'block.txt' / 'queries.log'}: cannot be opened: Not a directory"
    ) in server.stderr_text()
    assert _always(server, _www_from_nsd, WWW, "-b", OTHER_CLIENT)
    assert _reloads(server, "applied") == 0


@WORKERS
def test_no_query_lost_or_wrong_across_config_reloads(
    start: Callable[..., ServerProcess],
    fault_upstream: FaultUpstream,
    nsd_upstream: NsdServer,
    workers: int,
) -> None:
    """A client asks without pause while the upstream switches back and forth: every
    query gets the answer of one of the two upstreams."""
    addresses = {TestZone.WWW_A, fault_upstream.answer_ip}
    server = start(workers)
    stop = threading.Event()
    lost: list[str] = []
    wrong: list[str] = []
    sent = 0

    def ask_without_pause() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 50_000:
            sent += 1
            try:
                reply = query(server.port, WWW, "A", timeout=2.0)
            except dns.exception.Timeout:
                lost.append(WWW)
                continue
            got = {rr.address for rrset in reply.answer for rr in rrset}
            if reply.rcode() != dns.rcode.NOERROR or len(got) != 1 or not got <= addresses:
                wrong.append(str(reply))

    client = threading.Thread(target=ask_without_pause, name="dns-client", daemon=True)
    client.start()
    try:
        for reload in range(6):
            upstream = fault_upstream if reload % 2 == 0 else nsd_upstream
            address = fault_upstream.answer_ip if upstream is fault_upstream else TestZone.WWW_A
            _rewrite(server, _with(server.config, upstream={"servers": [upstream.upstream]}))
            assert _applied(
                server, lambda r, a=address: r.rdata("A") == [a], WWW  # type: ignore[misc]
            ), f"reload {reload + 1} not in force\n{server.stderr_text()}"
    finally:
        stop.set()
        client.join(30)
    assert not client.is_alive()
    assert sent > 100  # the client really ran throughout
    assert lost == [], f"{len(lost)} of {sent} queries unanswered"
    assert wrong == [], wrong[:3]
    assert _reloads(server, "applied") == 6

"""The resolver with `server.data_dir`: lists from a URL, kept fresh by `ListReloader`.

A real `filterdns serve` (tests/dns_resolver/harness.py) forwards to the session NSD and
takes its lists from the loopback HTTP server of conftest.py. SIGHUP refreshes them in a
child process and the server swaps the new snapshot in; queries keep being answered.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode
import pytest

from tests.dns_resolver.harness import NsdServer, ServerProcess, TestZone, eventually, query
from tests.listsync.conftest import ListServer, domain_list

pytestmark = pytest.mark.timeout(180)

Z = TestZone
LIST_PATH = "/adult.txt"
# Two versions of the list: SHORT is blocked by both, MAIL by neither, and WWW / BLOCKED
# by one each, so an answer from either version is easy to tell from a wrong one.
OLD = ["short.filterdns.test", "blocked.filterdns.test"]
NEW = ["short.filterdns.test", "www.filterdns.test"]
ADDRESS = {Z.WWW: Z.WWW_A, Z.BLOCKED: Z.BLOCKED_A, Z.MAIL: Z.MAIL_A}
RELOAD_TIMEOUT = 30.0  # a child process fetches and compiles: seconds, not milliseconds
_reloaded = partial(eventually, timeout=RELOAD_TIMEOUT)


def _config(list_server: ListServer, nsd: NsdServer, workers: int = 1) -> dict[str, Any]:
    return {
        "server": {"data_dir": "state", "workers": workers},
        "upstream": {"servers": [nsd.upstream], "timeout": 0.5},
        "lists": [{"name": "adult", "url": list_server.url(LIST_PATH), "category": "adult"}],
    }


def _blocked(server: ServerProcess, name: str) -> bool:
    return server.dig(name, "A").status == "NXDOMAIN"


def _serves(server: ServerProcess, entries: list[str]) -> bool:
    """True when WWW and BLOCKED are answered as the list `entries` says."""
    return all(
        _blocked(server, name) == (name.rstrip(".") in entries) for name in (Z.WWW, Z.BLOCKED)
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_serves_the_changed_url_list(
    start_filterdns: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
    list_server: ListServer,
    tmp_path: Path,
    workers: int,
) -> None:
    list_server.put(LIST_PATH, domain_list(OLD))
    # No snapshot yet: it is built (download and compile in a child) before serving.
    server = start_filterdns(_config(list_server, nsd_upstream, workers), ready_timeout=30.0)
    assert (tmp_path / "state" / "lists.snap").is_file()
    assert _serves(server, OLD)
    assert server.dig(Z.MAIL, "A").rdata("A") == [Z.MAIL_A]

    list_server.put(LIST_PATH, domain_list(NEW))
    server.send_signal(signal.SIGHUP)
    assert _reloaded(lambda: _serves(server, NEW)), server.stderr_text()
    # Each worker counts its own re-map; the parent's /metrics adds them up.
    assert _reloaded(
        lambda: server.metric("filterdns_list_reloads_total", result="success") == workers
    )
    assert server.metric("filterdns_list_entries", list="adult") == len(NEW)
    if workers == 1:  # the parent of several workers exports the workers' metrics only
        applied = server.metric(
            "filterdns_list_source_updates_total", source="adult", result="applied"
        )
        assert applied >= 2  # the start-up download and the changed list


class Client:
    """Queries the resolver without pause from a thread (dnspython, bounded count) and
    records every wrong or missing answer."""

    NAMES = (Z.SHORT, Z.MAIL, Z.WWW, Z.BLOCKED)
    MAX_QUERIES = 50_000

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self.answered = 0
        self.lost = 0
        self.wrong: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dns-client", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.sent < self.MAX_QUERIES:
            name = self.NAMES[self.sent % len(self.NAMES)]
            self.sent += 1
            try:
                reply = query(self.port, name, "A", timeout=2.0)
            except dns.exception.Timeout:
                self.lost += 1
                continue
            self.answered += 1
            if not self._matches(name, reply):
                self.wrong.append(f"{name}: {reply}")

    @staticmethod
    def _matches(name: str, reply: Any) -> bool:
        """The answer of the old or of the new lists (SHORT blocked by both, MAIL by
        neither, WWW and BLOCKED by one of them: blocked or their real address)."""
        blocked = reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
        if name == Z.SHORT:
            return blocked
        answered = reply.rcode() == dns.rcode.NOERROR and [
            rr.address for rrset in reply.answer for rr in rrset
        ] == [ADDRESS[name]]
        return answered if name == Z.MAIL else answered or blocked


def test_no_query_lost_or_wrong_during_ten_reloads(
    start_filterdns: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
    list_server: ListServer,
) -> None:
    list_server.put(LIST_PATH, domain_list(OLD))
    server = start_filterdns(_config(list_server, nsd_upstream), ready_timeout=30.0)
    assert _serves(server, OLD)
    client = Client(server.port)
    client.thread.start()
    try:
        for reload in range(10):
            entries = NEW if reload % 2 == 0 else OLD
            list_server.put(LIST_PATH, domain_list(entries))
            server.send_signal(signal.SIGHUP)
            assert _reloaded(lambda e=entries: _serves(server, e)), (  # type: ignore[misc]
                f"reload {reload + 1} not in force\n{server.stderr_text()}"
            )
    finally:
        client.stop.set()
        client.thread.join(30)
    assert not client.thread.is_alive()
    assert client.sent > 100  # the client really ran throughout
    assert client.lost == 0, f"{client.lost} of {client.sent} queries unanswered"
    assert client.wrong == [], client.wrong[:5]
    assert client.answered == client.sent
    assert _reloaded(lambda: server.metric("filterdns_list_reloads_total", result="success") == 10)


def test_restart_serves_the_snapshot_at_once_with_the_source_down(
    start_filterdns: Callable[..., ServerProcess],
    nsd_upstream: NsdServer,
    list_server: ListServer,
) -> None:
    list_server.put(LIST_PATH, domain_list(OLD))
    config = _config(list_server, nsd_upstream)
    first = start_filterdns(config, ready_timeout=30.0)
    assert _serves(first, OLD)
    assert first.stop() == 0
    list_server.stop()  # the source is unreachable from now on

    started = time.monotonic()
    # The snapshot on disk is mapped at start-up: no download, no compile before serving.
    second = start_filterdns(config, ready_timeout=10.0)
    assert time.monotonic() - started < 10.0
    assert _serves(second, OLD)
    assert "lists from the snapshot" in second.stderr_text()
    assert "no usable snapshot" not in second.stderr_text()
    # A refresh now finds the source down: the cached copy and the lists stay in force.
    second.send_signal(signal.SIGHUP)
    assert _reloaded(lambda: "list source adult: fallback" in second.stderr_text()), (
        second.stderr_text()
    )
    assert second.running() and _serves(second, OLD)
    assert _reloaded(
        lambda: (
            second.metric("filterdns_list_source_updates_total", source="adult", result="rejected")
            >= 1
        )
    )

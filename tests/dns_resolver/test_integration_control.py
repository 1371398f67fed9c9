"""Integration: metrics after a known sequence of queries, SIGHUP list reloads, the
command line (--check-config, flags), clean shutdown and the query log."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.dns_resolver.harness import (
    REPO_ROOT,
    NsdServer,
    ServerProcess,
    TestZone,
    dig,
    eventually,
    free_port,
    send_raw_udp,
    wait_for_dns,
    write_list,
)

Z = TestZone


def test_metrics_after_a_known_sequence(filterdns_on_nsd: Callable[..., ServerProcess]) -> None:
    server = filterdns_on_nsd({"upstream": {"timeout": 0.5}})
    formerr_before = server.metric("filterdns_queries_total", result="formerr")
    server.dig(Z.WWW, "A")  # allowed (miss)
    server.dig(Z.WWW, "A")  # cached
    server.dig(Z.WWW, "AAAA", "+tcp")  # allowed over TCP
    server.dig(Z.BLOCKED, "A")  # blocked by name
    server.dig(Z.CLOAK, "A")  # blocked by inspection
    server.dig(Z.MX, "MX")  # allowed
    send_raw_udp(server.port, b"\x00\x01" + b"\x00" * 10)  # QDCOUNT 0: FORMERR
    m = server.metric
    assert m("filterdns_queries_total", qtype="A", protocol="udp", result="allowed") == 1
    assert m("filterdns_queries_total", qtype="A", protocol="udp", result="cached") == 1
    assert m("filterdns_queries_total", qtype="AAAA", protocol="tcp", result="allowed") == 1
    assert m("filterdns_queries_total", qtype="A", result="blocked") == 2
    assert m("filterdns_queries_total", qtype="MX", result="allowed") == 1
    assert m("filterdns_queries_total", result="formerr") == formerr_before + 1
    assert m("filterdns_blocks_total", category="adult", list="test") == 2
    assert m("filterdns_cache_hits_total") == 1
    # Every cache lookup but the hit missed; blocked-by-name queries never store.
    assert m("filterdns_cache_misses_total") == 5
    assert m("filterdns_cache_entries") == 4  # www A, www AAAA, cloak (block), mx
    assert m("filterdns_upstream_queries_total", upstream=server_upstream(server)) == 4
    assert m("filterdns_list_entries", list="test") == len(Z.BLOCKLIST)
    assert m("filterdns_lists_loaded_timestamp_seconds") > time.time() - 60
    assert m("filterdns_response_seconds_count") == 7 + formerr_before
    text = server.metrics_text()
    assert "www.filterdns.test" not in text and '127.0.0.1"' not in text.replace(
        'upstream="127.0.0.1', ""
    )


def server_upstream(server: ServerProcess) -> str:
    import tomllib

    return tomllib.loads(server.config_path.read_text())["upstream"]["servers"][0]


def test_sighup_reloads_lists_and_keeps_them_on_failure(
    start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer, tmp_path: Path
) -> None:
    listed = write_list(tmp_path, ["blocked.filterdns.test"], name="reload.txt")
    server = start_filterdns(
        {
            "upstream": {"timeout": 0.5},
            "lists": [{"path": str(listed), "name": "reload", "category": "adult"}],
        },
        upstreams=[nsd_upstream.upstream],
    )
    assert server.dig(Z.WWW, "A").status == "NOERROR"
    assert server.dig(Z.BLOCKED, "A").status == "NXDOMAIN"
    write_list(tmp_path, ["www.filterdns.test"], name="reload.txt")
    server.send_signal(signal.SIGHUP)
    assert eventually(lambda: server.dig(Z.WWW, "A").status == "NXDOMAIN")
    assert server.dig(Z.BLOCKED, "A").status == "NOERROR"
    assert server.metric("filterdns_list_reloads_total", result="success") == 1
    # A list file gone: the configuration no longer validates, so the reload is rejected
    # and the lists in use stay.
    listed.unlink()
    server.send_signal(signal.SIGHUP)
    assert eventually(
        lambda: server.metric("filterdns_config_reloads_total", result="rejected") == 1
    )
    assert server.dig(Z.WWW, "A").status == "NXDOMAIN"
    assert f"lists[0].path: {listed}: no such file or folder" in server.stderr_text()
    assert server.metric("filterdns_list_reloads_total", result="success") == 1


def _filterdns(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterdns", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )


def test_check_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[server]\nlisten = ["127.0.0.1:5399"]\n[upstream]\nservers = ["127.0.0.1:53"]\n'
    )
    ok = _filterdns("serve", "--check-config", str(good))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[access]\nallow = ["10.0.0.0/33"]\n')
    failed = _filterdns("serve", "--check-config", str(bad))
    assert failed.returncode == 2
    assert "access.allow" in failed.stderr and "bad.toml" in failed.stderr


def test_flags_only_serve_and_clean_shutdown(nsd_upstream: NsdServer, tmp_path: Path) -> None:
    listed = write_list(tmp_path, ["blocked.filterdns.test"])
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "filterdns",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            nsd_upstream.upstream,
            "--list",
            f"{listed}:gambling",
            "--block-mode",
            "nodata",
            "--metrics-listen",
            "",
            "--log-format",
            "json",
        ],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_dns(port, timeout=10, is_alive=lambda: proc.poll() is None)
        blocked = dig("127.0.0.1", port, Z.BLOCKED, "A")
        assert blocked.status == "NOERROR" and not blocked.answer
        assert "category=gambling" in blocked.ede_text
        # Without a config file `test.` is a locally served zone (RFC 6761): answered
        # here, never asked upstream (a config's `[local] nodefault` forwards it).
        local = dig("127.0.0.1", port, Z.WWW, "A")
        assert local.status == "NXDOMAIN" and "aa" in local.flags
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=5)
        err = proc.stderr.read() if proc.stderr else ""
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("shutting down" in entry["message"] for entry in lines)


def test_query_log(filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path) -> None:
    log_path = tmp_path / "queries.jsonl"
    server = filterdns_on_nsd(
        {"upstream": {"timeout": 0.5}, "querylog": {"enabled": True, "path": str(log_path)}}
    )
    server.dig(Z.WWW, "A")
    server.dig(Z.BLOCKED, "A")
    server.stop()
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["result"] for e in entries] == ["allowed", "blocked"]
    assert entries[0]["client"] == "127.0.0.0"
    assert entries[1]["category"] == "adult" and entries[1]["list"] == "test"


def test_serve_data_dir_flag_overrides_the_file(
    filterdns_on_nsd: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """`--data-dir` replaces server.data_dir: the query log's relative path lands there."""
    flag_dir = tmp_path / "flag-data"
    flag_dir.mkdir()
    server = filterdns_on_nsd(
        {
            "server": {"data_dir": "file-data"},
            "upstream": {"timeout": 0.5},
            "querylog": {"enabled": True, "path": "queries.jsonl"},
        },
        extra_args=["--data-dir", str(flag_dir)],
    )
    assert server.dig(Z.WWW, "A").status == "NOERROR"
    server.stop()
    entries = [json.loads(line) for line in (flag_dir / "queries.jsonl").read_text().splitlines()]
    assert [e["qname"] for e in entries] == [Z.WWW.rstrip(".")]
    assert not (tmp_path / "file-data").exists()


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    port = free_port()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", port))
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "filterdns", "serve", "--offline",
                "--data-dir", str(tmp_path / "state"),
                "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9",
                "--metrics-listen", "",
            ],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "Traceback" not in result.stderr

"""`filterdns lists update | history | diff` through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.listsync.conftest import ListServer, domain_list, names, url_list, write_config

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def filterdns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterdns", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config_file(tmp_path: Path, list_server: ListServer) -> Path:
    list_server.put("/adult.txt", domain_list(names(20)))
    return write_config(tmp_path, url_list(list_server.url("/adult.txt"), "adult"))


def test_update_then_history(config_file: Path, list_server: ListServer, tmp_path: Path) -> None:
    first = filterdns("lists", "update", "--config", str(config_file))
    assert first.returncode == 0, first.stderr
    assert "adult" in first.stdout and "fetched" in first.stdout and "20 entries" in first.stdout
    assert "+20 -0" in first.stdout and "compiled 20 entries" in first.stdout
    assert first.stderr == ""  # no progress bars when not a terminal
    snapshot = tmp_path / "state" / "lists.snap"
    check = filterdns("check", "--snapshot", str(snapshot), "site3.example")
    assert check.returncode == 1 and "adult" in check.stdout

    again = filterdns("lists", "update", "--config", str(config_file))
    assert again.returncode == 0 and "not-modified" in again.stdout and "up to date" in again.stdout

    list_server.put("/adult.txt", domain_list(names(5)))
    shrunk = filterdns("lists", "update", "--config", str(config_file), "--json")
    assert shrunk.returncode == 1
    [source] = json.loads(shrunk.stdout)["sources"]
    assert source["status"] == "rejected" and "shrank from 20 to 5" in source["reason"]

    history = filterdns("lists", "history", "--config", str(config_file))
    assert history.returncode == 0
    lines = [line for line in history.stdout.splitlines() if "  adult  " in line]
    assert len(lines) == 3
    assert "applied" in lines[0] and "+20 -0" in lines[0]
    assert "unchanged (not-modified)" in lines[1]
    assert "rejected" in lines[2] and "shrank" in lines[2]

    as_json = filterdns("lists", "history", "--data-dir", str(tmp_path / "state"), "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["result"] for r in records if r["kind"] == "list-update"] == [
        "applied",
        "unchanged",
        "rejected",
    ]


def test_diff(config_file: Path, list_server: ListServer) -> None:
    assert filterdns("lists", "update", "--config", str(config_file)).returncode == 0
    list_server.put("/adult.txt", domain_list(names(19) + ["added.example"]))
    diff = filterdns("lists", "diff", "--config", str(config_file), "adult")
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == ["adult: +1 -1", "+ added.example", "- site19.example"]
    unknown = filterdns("lists", "diff", "--config", str(config_file), "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_data_dir_flag_and_unreachable_source(config_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    result = filterdns("lists", "update", "--config", str(config_file), "--data-dir", str(other))
    assert result.returncode == 0, result.stderr
    assert (other / "lists.snap").exists() and not (tmp_path / "state").exists()


def test_offline_update_downloads_nothing(
    config_file: Path, list_server: ListServer, tmp_path: Path
) -> None:
    result = filterdns("lists", "update", "--config", str(config_file), "--offline")
    assert result.returncode == 0, result.stderr
    assert "pending       no copy: offline: not downloaded" in result.stdout
    assert list_server.requests == []
    assert (tmp_path / "state" / "lists.snap").exists()  # compiled from what is at hand
    fetched = filterdns("lists", "update", "--config", str(config_file))
    assert fetched.returncode == 0 and "fetched" in fetched.stdout
    # With a copy, offline serves it: the compiled snapshot keeps its 20 entries.
    again = filterdns("lists", "update", "--config", str(config_file), "--offline", "--force")
    assert "cached        20 entries" in again.stdout
    assert "compiled 20 entries" in again.stdout
    assert len(list_server.requests) == 1


def test_update_reports_an_unreachable_source(tmp_path: Path) -> None:
    config = write_config(tmp_path, url_list("http://127.0.0.1:9/list.txt", "down"))
    result = filterdns("lists", "update", "--config", str(config))
    assert result.returncode == 1
    assert "unavailable" in result.stdout and "no cached copy" in result.stdout


def test_update_draws_progress_bars_on_a_terminal(config_file: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-m", "filterdns", "lists", "update", "--config", str(config_file)],
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
        assert child.wait(timeout=60) == 0
    text = out.decode(errors="replace")
    assert "adult:" in text and "B/s" in text  # the download bar
    assert "compile:" in text and "verify" in text  # the compilation stages
    assert "fetched" in text and "compiled 20 entries" in text  # the summary

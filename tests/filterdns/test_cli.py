"""The `filterdns` command, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

UT1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "ut1"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterdns", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    (tmp_path / "block.txt").write_text("# test\ncasino.example\nbad..name\nexample.org\n")
    (tmp_path / "urls").write_text("example.net/bad/page\n")
    return tmp_path


def test_check_prints_a_verdict_per_name_and_exits_1_on_a_block(lists: Path) -> None:
    result = run(
        "check",
        "www.casino.example",
        "fine.example",
        "--list",
        f"{lists / 'block.txt'}:gambling",
    )
    assert result.returncode == 1, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first.startswith("www.casino.example: block (category gambling, list block")
    assert f"{lists / 'block.txt'}:2" in first and "'casino.example'" in first
    assert second == "fine.example: none (no rule matched)"


def test_check_json_has_the_documented_keys(lists: Path) -> None:
    result = run(
        "check",
        "http://www.example.net/bad/page/x.html",
        "example.com",
        "--list",
        f"{lists / 'urls'}:adult:urls",
        "--json",
    )
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    keys = {"input", "action", "category", "list", "rule", "source", "line", "matched"}
    assert all(keys <= row.keys() for row in rows)
    assert rows[0]["action"] == "block" and rows[0]["rule"] == "example.net/bad/page"
    assert rows[0]["line"] == 1 and rows[0]["category"] == "adult"
    assert rows[1]["action"] == "none"


def test_check_exits_0_when_nothing_is_blocked_and_2_on_an_error(lists: Path) -> None:
    assert run("check", "fine.example", "--list", str(lists / "block.txt")).returncode == 0
    bad = run("check", "bad..name", "--list", str(lists / "block.txt"))
    assert bad.returncode == 2 and "empty label" in bad.stderr
    missing = run("check", "x.example", "--list", str(lists / "nope.txt"))
    assert missing.returncode == 2 and "nope.txt" in missing.stderr


def test_check_uses_the_bundled_lists_by_default() -> None:
    doh = (
        (Path(__file__).resolve().parents[2] / "lists" / "default" / "ut1" / "doh" / "domains")
        .read_text()
        .split()[0]
    )
    result = run("check", doh, "--json")
    assert result.returncode == 1, result.stderr
    row = json.loads(result.stdout)
    assert row["category"] == "filter-bypass"


def test_lists_stats_reports_entries_and_malformed_lines(lists: Path) -> None:
    result = run("lists", "stats", "--list", f"{lists / 'block.txt'}:gambling")
    assert result.returncode == 0, result.stderr
    assert "gambling" in result.stdout
    assert "1 malformed or unsupported lines" in result.stdout
    assert f"{lists / 'block.txt'}:3: empty label" in result.stdout
    as_json = json.loads(
        run("lists", "stats", "--list", f"{lists / 'block.txt'}:gambling", "--json").stdout
    )
    assert as_json["entries"] == 2 and as_json["malformed"][0]["line"] == 3


def test_compile_writes_a_snapshot_that_check_loads(tmp_path: Path) -> None:
    snapshot = tmp_path / "ut1.snap"
    result = run("compile", "--list", str(UT1), "-o", str(snapshot))
    assert result.returncode == 0, result.stderr
    assert "entries" in result.stdout and snapshot.exists()
    name = (UT1 / "gambling" / "domains").read_text().split()[0]
    # From another directory: sources are stored absolute, so the rule can be read back.
    checked = run("check", "--snapshot", str(snapshot), name, "--json", cwd=tmp_path)
    row = json.loads(checked.stdout)
    assert row["action"] == "block" and row["rule"] == name


@pytest.mark.parametrize("command", [[], ["check"], ["compile"], ["lists", "stats"], ["serve"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "usage: filterdns" in result.stdout


def test_version() -> None:
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"filterdns {version('filterdns')}"

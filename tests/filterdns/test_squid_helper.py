"""`filterdns squid-helper` driven as Squid drives it: a child process on pipes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from filtercore import Action, ListSpec, Matcher
from filterdns.squid_helper import SquidHelper

ROOT = Path(__file__).resolve().parents[2]
BLOCK_URL = "http://block.test/blocked"
EXTRAS = "127.0.0.1/localhost - GET myip=127.0.0.1 myport=3128"


class HelperProcess:
    """A running helper with line-oriented, time-bounded request/reply helpers."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.stderr_path = cwd / "helper.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "filterdns", "squid-helper", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._pending = b""

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_lines(self, count: int, timeout: float = 10.0) -> list[str]:
        """Exactly `count` reply lines, or fail after `timeout` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while self._pending.count(b"\n") < count:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for replies; got {self._pending!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                assert chunk, f"helper exited; stderr: {self.stderr_text()}"
                self._pending += chunk
        lines = self._pending.split(b"\n")
        self._pending = b"\n".join(lines[count:])
        return [line.decode() for line in lines[:count]]

    def ask(self, *lines: str) -> list[str]:
        self.send("".join(f"{line}\n" for line in lines).encode())
        return self.read_lines(len(lines))

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> int:
        """Close stdin as Squid does at shutdown; the exit status."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self._stderr.close()


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    (tmp_path / "urls.txt").write_text("example.org/bad/page\nphotos.test/private\n")
    (tmp_path / "keywords.txt").write_text("sex\n@@sussex\n")
    (tmp_path / "gambling.txt").write_text("casino.example\n")
    (tmp_path / "allow.txt").write_text("fine.casino.example\n")
    return tmp_path


def _list_args() -> list[str]:
    return [
        "--list", "urls.txt:adult:urls",
        "--list", "keywords.txt:adult:keywords",
        "--list", "gambling.txt:gambling",
    ]  # fmt: skip


@pytest.fixture
def helper(lists: Path) -> Iterator[HelperProcess]:
    proc = HelperProcess([*_list_args(), "--block-url", BLOCK_URL], lists)
    yield proc
    assert proc.close() == 0


@pytest.fixture
def acl_helper(lists: Path) -> Iterator[HelperProcess]:
    proc = HelperProcess([*_list_args(), "--mode", "acl"], lists)
    yield proc
    assert proc.close() == 0


def _redirect(reply: str) -> tuple[str, dict[str, list[str]]]:
    """(block page base, query) of an `OK status=302 url="..."` reply (after the channel)."""
    prefix = 'OK status=302 url="'
    assert reply.startswith(prefix) and reply.endswith('"'), reply
    url = urlsplit(reply[len(prefix) : -1])
    return f"{url.scheme}://{url.netloc}{url.path}", parse_qs(url.query)


def test_rewrite_blocks_listed_url_and_leaves_others(helper: HelperProcess) -> None:
    replies = helper.ask(
        f"http://example.org/bad/page/x.html {EXTRAS}",
        f"http://example.org/good {EXTRAS}",
        f"https://www.casino.example/ {EXTRAS}",
    )
    base, query = _redirect(replies[0])
    assert base == BLOCK_URL
    assert query == {"host": ["example.org"], "category": ["adult"], "list": ["urls"]}
    assert replies[1] == "ERR"
    _, query = _redirect(replies[2])
    assert query == {"host": ["www.casino.example"], "category": ["gambling"],
                     "list": ["gambling"]}  # fmt: skip


def test_keyword_rule_and_exception(helper: HelperProcess) -> None:
    blocked, allowed = helper.ask(
        f"7 http://news.test/sex-shop {EXTRAS}", f"8 http://news.test/sussex-weather {EXTRAS}"
    )
    assert _redirect(blocked.removeprefix("7 "))[1]["list"] == ["keywords"]
    assert allowed == "8 ERR"


def test_channel_ids_are_echoed_with_many_in_flight(helper: HelperProcess) -> None:
    urls = ["http://example.org/bad/page", "http://example.org/", "http://casino.example/x"]
    lines = [f"{channel} {urls[channel % 3]} {EXTRAS}" for channel in range(300)]
    lines.reverse()  # channel-IDs in any order; replies come back in request order
    replies = helper.ask(*lines)
    for line, reply in zip(lines, replies, strict=True):
        channel = line.split()[0]
        assert reply.split()[0] == channel
        blocked = "example.org/ " not in line
        assert reply.startswith(f"{channel} OK status=302") == blocked, (line, reply)


def test_extras_are_optional_and_ignored(helper: HelperProcess) -> None:
    replies = helper.ask(
        "1 http://example.org/bad/page",
        "2 http://example.org/bad/page - - CONNECT myip=- myport=-",
        "3 http://example.org/bad/page ::1/- alice POST myip=::1 myport=3128 extra tokens",
    )
    assert all(r.split()[1:3] == ["OK", "status=302"] for r in replies), replies


def test_connect_authority_form(helper: HelperProcess) -> None:
    (reply,) = helper.ask(f"4 casino.example:443 {EXTRAS}")
    assert _redirect(reply.removeprefix("4 "))[1]["host"] == ["casino.example"]


def test_malformed_lines_get_bh_and_the_helper_goes_on(helper: HelperProcess) -> None:
    helper.send(b"\n5\n6 http://exa..mple.com/\n7 http://a..b/\n8 \xff\xfe/x\n")
    replies = helper.read_lines(5)
    assert replies[0] == 'BH message="empty request line"'
    assert replies[1] == '5 BH message="no URL after the channel-ID"'
    assert replies[2].startswith('6 BH message="invalid')
    assert replies[3].startswith('7 BH message="invalid URL')
    assert replies[4].startswith('8 BH message="invalid URL')
    assert helper.ask("9 http://example.org/bad/page")[0].startswith("9 OK ")


def test_block_url_with_a_query_string(lists: Path) -> None:
    proc = HelperProcess([*_list_args(), "--block-url", "http://b.test/p?lang=en"], lists)
    try:
        (reply,) = proc.ask("http://casino.example/")
        assert reply.startswith('OK status=302 url="http://b.test/p?lang=en&host=casino.example&')
    finally:
        assert proc.close() == 0


def test_acl_mode(acl_helper: HelperProcess) -> None:
    replies = acl_helper.ask(
        "1 http%3A%2F%2Fexample.org%2Fbad%2Fpage 127.0.0.1",
        "2 http%3A%2F%2Fexample.org%2F 127.0.0.1",
        "http://casino.example/ -",
        "3",
    )
    assert replies[0].split()[:2] == ["1", "OK"]
    fields = dict(kv.split("=", 1) for kv in replies[0].split()[2:])
    assert fields["tag"] == "adult"
    assert unquote(fields["message"]) == "blocked: category adult, list urls"
    assert replies[1] == "2 ERR"
    assert replies[2].startswith("OK tag=gambling message=")
    assert replies[3] == "3 BH message=no%20URL%20after%20the%20channel-ID"


def test_sighup_reloads_and_keeps_old_lists_on_failure(helper: HelperProcess, lists: Path) -> None:
    assert helper.ask("1 http://new.example/")[0] == "1 ERR"
    (lists / "gambling.txt").write_text("casino.example\nnew.example\n")
    helper.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while helper.ask("2 http://new.example/")[0] == "2 ERR":
        assert time.monotonic() < deadline, helper.stderr_text()
        time.sleep(0.05)
    assert "lists reloaded" in helper.stderr_text()

    (lists / "gambling.txt").unlink()  # the next reload fails: the old lists must stay
    helper.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "reload failed" not in helper.stderr_text():
        assert time.monotonic() < deadline, helper.stderr_text()
        time.sleep(0.05)
    assert helper.ask("3 http://new.example/")[0].startswith("3 OK status=302")
    assert helper.proc.poll() is None


def test_last_line_without_newline_is_answered(lists: Path) -> None:
    proc = HelperProcess(_list_args(), lists)
    try:
        proc.send(b"1 http://casino.example/")
        assert proc.proc.stdin is not None
        proc.proc.stdin.close()
        assert proc.read_lines(1)[0].startswith("1 OK status=302")
    finally:
        assert proc.close() == 0


def test_startup_failure_is_reported(lists: Path) -> None:
    proc = HelperProcess(["--list", "missing.txt"], lists)
    assert proc.close() == 2
    assert "missing.txt" in proc.stderr_text()


# -- in process: the policy seam and explicit allows ---------------------------------------


def _matcher(lists: Path) -> Matcher:
    return Matcher.from_lists(
        [
            ListSpec(str(lists / "urls.txt"), category="adult", format="urls"),
            ListSpec(str(lists / "gambling.txt"), category="gambling"),
            ListSpec(str(lists / "allow.txt"), category="gambling", action=Action.ALLOW),
        ]
    )


def test_policy_maps_client_to_categories(lists: Path) -> None:
    seen: list[str | None] = []

    def policy(client: str | None) -> frozenset[str] | None:
        seen.append(client)
        return frozenset({"adult"}) if client == "10.0.0.7" else None

    helper = SquidHelper(lambda: _matcher(lists), policy=policy)
    url = "http://casino.example/"
    assert helper.handle(f"1 {url} 10.0.0.7/- - GET myip=10.0.0.1 myport=3128") == "1 ERR\n"
    assert helper.handle(f"2 {url} 10.0.0.8/- - GET").startswith("2 OK status=302")
    assert helper.handle(f"3 {url} -/- - GET").startswith("3 OK status=302")
    assert seen == ["10.0.0.7", "10.0.0.8", None]

    acl = SquidHelper(lambda: _matcher(lists), mode="acl", policy=policy)
    assert acl.handle("4 http%3A%2F%2Fcasino.example%2F 10.0.0.7") == "4 ERR\n"
    assert acl.handle("5 http%3A%2F%2Fcasino.example%2F 10.0.0.8").startswith("5 OK tag=")


def test_acl_explicit_allow_says_why(lists: Path) -> None:
    helper = SquidHelper(lambda: _matcher(lists), mode="acl")
    reply = helper.handle("http://fine.casino.example/")
    assert reply == "ERR message=allowed%20by%20list%20allow\n"


def test_internal_fault_gets_bh(lists: Path) -> None:
    def policy(client: str | None) -> frozenset[str] | None:
        raise RuntimeError("policy store unreachable")

    helper = SquidHelper(lambda: _matcher(lists), policy=policy)
    reply = helper.handle("6 http://casino.example/ 10.0.0.7/- - GET")
    assert reply == '6 BH message="internal error: RuntimeError: policy store unreachable"\n'


def test_unknown_mode_is_refused(lists: Path) -> None:
    with pytest.raises(ValueError, match="unknown helper mode"):
        SquidHelper(lambda: _matcher(lists), mode="redirect")


def test_config_policies_map_clients_as_the_resolver_does(tmp_path: Path) -> None:
    """`--config` with `[policies]`: 127.0.0.2 is the family example's child policy."""
    root = Path(__file__).resolve().parents[2]
    gambling = (root / "lists" / "default" / "ut1" / "gambling" / "domains").read_text().split()
    url = f"http://www.{gambling[0]}/"
    proc = HelperProcess(["--config", str(root / "examples" / "family.toml")], tmp_path)
    try:
        child, other, unknown = proc.ask(
            f"1 {url} 127.0.0.2/- - GET myip=127.0.0.1 myport=3128",
            f"2 {url} 127.0.0.1/- - GET",
            f"3 {url} -/- - GET",
        )
    finally:
        assert proc.close() == 0
    assert child.startswith("1 OK status=302") and "category=gambling" in child
    # Everyone else gets the default policy, which blocks malware-phishing only.
    assert other == "2 ERR"
    assert unknown == "3 ERR"

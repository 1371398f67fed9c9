"""Daily allowances: distinct minutes per client and category, spent -> blocked until the
next local day, shared through SQLite by several stores (worker processes) and kept across
a restart."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import dns.message
import dns.rcode

from dns_resolver import edns
from dns_resolver.resolver import Pending
from dns_resolver.steps.allowance import AllowanceStore
from tests.dns_resolver.policy_helpers import Clock, ask, make_config, make_resolver, paris

POLICIES = """
[policies.child]
clients = ["127.0.0.2/32"]
block = ["adult"]
timezone = "Europe/Paris"

[[policies.child.allowance]]
category = "games"
minutes = 2

[[policies.child.schedule]]
name = "school"
days = ["weekdays"]
start = "08:00"
end = "15:00"
block = ["games"]
"""


def blocked_text(out: bytes | Pending) -> str | None:
    if isinstance(out, Pending):
        return None
    assert dns.message.from_wire(out).rcode() == dns.rcode.NXDOMAIN
    return edns.ede_codes(out)[0][1]


def test_store_counts_distinct_minutes_and_refuses_past_the_limit(tmp_path: Path) -> None:
    store = AllowanceStore(tmp_path / "a.sqlite", flush_interval=60)
    try:
        assert store.use("2026-11-23", "c", "games", 100, 2) == (True, 1)
        assert store.use("2026-11-23", "c", "games", 100, 2) == (True, 1)  # same minute
        assert store.use("2026-11-23", "c", "games", 101, 2) == (True, 2)
        assert store.use("2026-11-23", "c", "games", 101, 2) == (True, 2)  # its last minute
        assert store.use("2026-11-23", "c", "games", 102, 2) == (False, 2)
        assert store.use("2026-11-23", "other", "games", 102, 2) == (True, 1)
        assert store.use("2026-11-24", "c", "games", 1540, 2) == (True, 1)  # a new day
    finally:
        store.close()


def test_workers_share_minutes_and_a_restart_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    one = AllowanceStore(path, flush_interval=60)
    two = AllowanceStore(path, flush_interval=60)
    try:
        one.use("d", "c", "games", 10, 3)
        two.use("d", "c", "games", 10, 3)  # the same minute in another worker
        two.use("d", "c", "games", 11, 3)
        one.flush()
        two.flush()
        one.flush()
        assert one.used("d", "c", "games") == 2 == two.used("d", "c", "games")
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        one.close()
        two.close()
    again = AllowanceStore(path, flush_interval=60)
    try:
        assert again.used("d", "c", "games") == 2
        assert again.use("d", "c", "games", 12, 3) == (True, 3)
        assert again.use("d", "c", "games", 13, 3) == (False, 3)
    finally:
        again.close()


def test_background_flusher_writes_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    store = AllowanceStore(path, flush_interval=0.05)
    try:
        store.use("d", "c", "games", 1, 5)
        for _ in range(100):  # bounded wait: at most 5 s
            with sqlite3.connect(path) as db:
                if db.execute("SELECT COUNT(*) FROM used_minutes").fetchone()[0] == 1:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the flusher did not write the minute")
    finally:
        store.close()


def test_allowance_in_the_resolver(tmp_path: Path) -> None:
    clock = Clock(paris(28, 10, 0, 5))  # Saturday: no school window
    resolver = make_resolver(make_config(tmp_path, POLICIES), clock)
    try:
        assert blocked_text(ask(resolver, "game.example", "127.0.0.2")) is None  # minute 1
        clock.now += 50
        assert blocked_text(ask(resolver, "play.example", "127.0.0.2")) is None  # same minute
        clock.now = paris(28, 10, 7)
        assert blocked_text(ask(resolver, "game.example", "127.0.0.2")) is None  # minute 2
        clock.now = paris(28, 10, 8)
        text = blocked_text(ask(resolver, "game.example", "127.0.0.2"))
        assert text == (
            "blocked: category=games list=games rule=game.example policy=child "
            "allowance=games:2min-used-up-until-tomorrow"
        )
        # Other clients of the same policy have their own allowance; other categories are
        # unaffected.
        assert resolver.policies.select("127.0.0.2").client == "127.0.0.2"
        assert blocked_text(ask(resolver, "friends.example", "127.0.0.2")) is None
        # The next local day starts a new allowance.
        clock.now = paris(29, 0, 0, 1)
        assert blocked_text(ask(resolver, "game.example", "127.0.0.2")) is None
        # During a window that blocks the category, the allowance does not apply.
        clock.now = paris(30, 9, 0)  # Monday, school
        text = blocked_text(ask(resolver, "game.example", "127.0.0.2"))
        assert text is not None and text.endswith("policy=child schedule=school")
        view = resolver.policies.fast_view()
        games_bit = 1 << view.categories.index("games")
        child = view.policies[resolver.policies.by_name["child"].index]
        assert child.mask & games_bit and not child.punt_mask & games_bit
        clock.now = paris(30, 16, 0)
        child = resolver.policies.fast_view().policies[0]
        assert child.punt_mask & games_bit and not child.mask & games_bit
    finally:
        resolver.policies.allowances.close()
    assert (tmp_path / "allowances.sqlite").exists()

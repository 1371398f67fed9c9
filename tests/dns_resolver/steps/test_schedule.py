"""Weekly windows: crossing midnight, time zones, DST, and the next boundary."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from dns_resolver.steps.schedule import Schedule, Window, local_day
from fdconfig.policies import parse_clock

PARIS = ZoneInfo("Europe/Paris")
GAMES, SOCIAL = 1, 2
WEEKDAYS = frozenset(range(5))


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    """A Europe/Paris wall-clock time as a timestamp."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp()


def test_parse_clock() -> None:
    assert parse_clock("08:00") == 480
    assert parse_clock("24:00") == 1440
    for bad in ("8", "25:00", "08:60", "24:01", "ab:cd", "08:5"):
        with pytest.raises(ValueError):
            parse_clock(bad)


def test_school_hours_on_weekdays_only() -> None:
    school = Schedule([Window(WEEKDAYS, 8 * 60, 15 * 60, block_mask=GAMES)], "Europe/Paris")
    # Monday 2026-11-23
    assert school.apply(0, at(2026, 11, 23, 7, 59))[0] == 0
    assert school.apply(0, at(2026, 11, 23, 8, 0))[0] == GAMES
    assert school.apply(0, at(2026, 11, 23, 14, 59))[0] == GAMES
    assert school.apply(0, at(2026, 11, 23, 15, 0))[0] == 0
    assert school.apply(0, at(2026, 11, 28, 10, 0))[0] == 0  # Saturday


def test_window_crossing_midnight_belongs_to_its_start_day() -> None:
    night = Schedule([Window(frozenset({4}), 21 * 60, 7 * 60, block_mask=SOCIAL)], "Europe/Paris")
    assert night.apply(0, at(2026, 11, 27, 20, 59))[0] == 0  # Friday evening, before
    assert night.apply(0, at(2026, 11, 27, 23, 30))[0] == SOCIAL
    assert night.apply(0, at(2026, 11, 28, 6, 59))[0] == SOCIAL  # Saturday morning
    assert night.apply(0, at(2026, 11, 28, 7, 0))[0] == 0
    assert night.apply(0, at(2026, 11, 23, 3, 0))[0] == 0  # Monday: Sunday is not listed


def test_later_window_wins_and_allow_removes() -> None:
    windows = [
        Window(frozenset(range(7)), 0, 0, block_mask=GAMES | SOCIAL),  # all day, every day
        Window(frozenset(range(7)), 18 * 60, 19 * 60, allow_mask=GAMES, name="games-hour"),
    ]
    s = Schedule(windows, "Europe/Paris")
    assert s.apply(0, at(2026, 11, 23, 12))[0] == GAMES | SOCIAL
    mask, active = s.apply(0, at(2026, 11, 23, 18, 30))
    assert mask == SOCIAL
    assert [w.name for w in active][-1] == "games-hour"


def test_next_change_is_the_boundary_in_local_time() -> None:
    school = Schedule([Window(WEEKDAYS, 8 * 60, 15 * 60, block_mask=GAMES)], "Europe/Paris")
    assert school.next_change(at(2026, 11, 23, 7, 30)) == at(2026, 11, 23, 8, 0)
    assert school.next_change(at(2026, 11, 23, 8, 0)) == at(2026, 11, 23, 15, 0)
    # Friday afternoon -> Monday morning
    assert school.next_change(at(2026, 11, 27, 16, 0)) == at(2026, 11, 30, 8, 0)
    assert Schedule([], "UTC").next_change(0.0) == float("inf")


def test_boundary_across_a_dst_change() -> None:
    # Europe/Paris leaves summer time on Sunday 2026-10-25 (03:00 -> 02:00).
    daily = Schedule(
        [Window(frozenset(range(7)), 8 * 60, 9 * 60, block_mask=GAMES)], "Europe/Paris"
    )
    saturday_noon = at(2026, 10, 24, 12, 0)
    assert daily.next_change(saturday_noon) == at(2026, 10, 25, 8, 0)
    assert daily.apply(0, at(2026, 10, 25, 8, 30))[0] == GAMES


def test_local_day_and_next_midnight() -> None:
    day, midnight = local_day(at(2026, 11, 23, 23, 59), PARIS)
    assert day == "2026-11-23"
    assert midnight == at(2026, 11, 24, 0, 0)

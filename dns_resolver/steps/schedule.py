"""Weekly time windows that block or allow categories, in a configured time zone.

A window is a set of week days, a start and an end time (local wall-clock time); it may
cross midnight (`21:00-07:00` on `fri` lasts until Saturday 07:00). While a window is
active its `block` categories are added to the policy's mask and its `allow` categories
removed; windows apply in configuration order, so a later window wins over an earlier one.

The masks only change at window boundaries, so `Schedule.state(now)` returns the mask
together with the instant of the next boundary: callers keep the mask until then and pay
one float comparison per query (see `PolicyTable`). Boundaries are found by stepping
through local minutes, which handles DST gaps and folds the way `zoneinfo` does.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


@dataclass(frozen=True)
class Window:
    """One weekly window. `start`/`end` are minutes after local midnight; `end <= start`
    means the window runs past midnight into the next day."""

    days: frozenset[int]  # 0 = Monday
    start: int
    end: int
    block_mask: int = 0
    allow_mask: int = 0
    name: str = ""

    def active(self, week_minute: int) -> bool:
        """Whether local minute-of-week `week_minute` (Monday 00:00 = 0) is inside."""
        day, minute = divmod(week_minute, MINUTES_PER_DAY)
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # Crosses midnight (or lasts 24 h when start == end): the part after the start on
        # a listed day, and the part before the end on the day after a listed day.
        if day in self.days and minute >= self.start:
            return True
        return (day - 1) % 7 in self.days and minute < self.end


class Schedule:
    """The windows of one policy, evaluated in one time zone."""

    def __init__(self, windows: Sequence[Window], timezone: str = "UTC") -> None:
        self.windows = tuple(windows)
        self.zone = ZoneInfo(timezone)
        # The masks over a week depend only on the local minute of the week: precompute
        # the minutes where any window starts or ends, so `state` scans a short list.
        edges: set[int] = set()
        for w in self.windows:
            for day in w.days:
                edges.add(day * MINUTES_PER_DAY + w.start)
                end_day = day if w.start < w.end else day + 1
                edges.add((end_day * MINUTES_PER_DAY + w.end) % MINUTES_PER_WEEK)
        self._edges = sorted(edges)

    def local(self, now: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(now, self.zone)

    def apply(self, base_mask: int, now: float) -> tuple[int, list[Window]]:
        """The mask at `now` and the windows active then."""
        when = self.local(now)
        week_minute = when.weekday() * MINUTES_PER_DAY + when.hour * 60 + when.minute
        mask = base_mask
        active = []
        for w in self.windows:
            if w.active(week_minute):
                mask = (mask | w.block_mask) & ~w.allow_mask
                active.append(w)
        return mask, active

    def next_change(self, now: float) -> float:
        """The first instant after `now` at which a window may start or end (inf if none)."""
        if not self._edges:
            return math.inf
        when = self.local(now)
        week_minute = when.weekday() * MINUTES_PER_DAY + when.hour * 60 + when.minute
        # Distance in local minutes to the next edge, then converted through the zone so a
        # DST change in between is accounted for.
        ahead = min((e - week_minute - 1) % MINUTES_PER_WEEK + 1 for e in self._edges)
        start_of_minute = when.replace(second=0, microsecond=0)
        naive = start_of_minute.replace(tzinfo=None) + dt.timedelta(minutes=ahead)
        target = naive.replace(tzinfo=self.zone).timestamp()
        # A local time skipped by DST maps to an instant that may not be after `now`.
        return target if target > now else now + 60.0


def local_day(now: float, zone: ZoneInfo) -> tuple[str, float]:
    """The local date (ISO) at `now` in `zone`, and the instant of the next local midnight."""
    when = dt.datetime.fromtimestamp(now, zone)
    tomorrow = (when + dt.timedelta(days=1)).date()
    midnight = dt.datetime.combine(tomorrow, dt.time(0, 0), tzinfo=zone).timestamp()
    return when.date().isoformat(), midnight


__all__ = ["Schedule", "Window", "local_day"]

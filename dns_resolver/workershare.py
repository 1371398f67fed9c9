"""What the workers of one supervisor share with the worker that serves the console.

With `server.workers = N` one worker (index 0) serves the admin listener and its console;
the others answer DNS only. They share two things through files in the supervisor's
private folder (`workers.ConfigHandoff`), so no process waits on another and nothing is
sent per query:

- each worker's query-log writer process (`observability/querywriter.py`) publishes its
  console aggregates (`QueryStats.state()` and its written/dropped counters) while rows
  arrive, as `stats-INDEX.pickle` (a restarted worker's writer starts from it); the
  console worker merges them at read time (counters added, Space-Saving sketches summed
  and trimmed back to k), so the overview costs the same at any query rate;
- the console worker writes the policy switches (pause, block-now) to `switches.json`
  whenever its policy masks change; every worker reads the file when it changes (polled
  every `POLL_INTERVAL`, well within the 1 s the console promises) and applies it. A
  restarted worker reads it as it starts, so a switch stays in force across a restart of
  any worker.

The other workers also publish their upstreams' health (`upstreams-INDEX.json`, once a
second when it changed), which the overview merges with the console worker's, and follow
the reviewers' overrides the console worker writes to the data directory
(`reports.overrides`), the same way.

Files are written to a temporary name and renamed, so a reader sees a whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONSOLE_WORKER = 0
"""The worker that serves the admin listener and merges the others' aggregates."""
POLL_INTERVAL = 0.25
SWITCHES = "switches.json"


def write_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` at once: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class WorkerShare:
    """The shared folder as seen by worker `index`."""

    def __init__(self, folder: str | os.PathLike[str], index: int, *, admin: bool) -> None:
        self.folder = Path(folder)
        self.index = index
        self.admin = admin  # the configuration has an admin listener (worker 0 serves it)
        self._peers: dict[int, tuple[int, Any]] = {}  # index -> (mtime_ns, loaded)
        self._peers_lock = threading.Lock()  # the admin API reads from worker threads

    @property
    def serves_console(self) -> bool:
        return self.index == CONSOLE_WORKER

    # -- console aggregates ---------------------------------------------------------------

    def publish_upstreams(self, health: list[dict[str, Any]]) -> None:
        """Publish this worker's view of its upstreams (`consolefeed.upstream_health`)."""
        write_file(self.folder / f"upstreams-{self.index}.json", json.dumps(health).encode())

    def peer_upstreams(self) -> list[list[dict[str, Any]]]:
        """The other workers' published views of their upstreams."""
        out = []
        for path in sorted(self.folder.glob("upstreams-*.json")):
            if path.name == f"upstreams-{self.index}.json":
                continue
            try:
                out.append(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                continue  # a worker that never published, or its folder going away
        return out

    def stats_file(self) -> Path:
        """Where this worker's query-log writer publishes its aggregates."""
        return self.folder / f"stats-{self.index}.pickle"

    def peers(self) -> list[Any]:
        """The other workers' latest published aggregates (re-read only when changed)."""
        out = []
        with self._peers_lock:
            for path in self.folder.glob("stats-*.pickle"):
                index = int(path.stem.removeprefix("stats-"))
                if index == self.index:
                    continue
                try:
                    mtime = path.stat().st_mtime_ns
                    cached = self._peers.get(index)
                    if cached is None or cached[0] != mtime:
                        cached = self._peers[index] = (mtime, pickle.loads(path.read_bytes()))
                except (OSError, pickle.UnpicklingError, EOFError) as exc:
                    log.debug("worker %d's aggregates unreadable: %s", index, exc)
                    continue
                out.append(cached[1])
        return out

    # -- policy switches ------------------------------------------------------------------

    def write_switches(self, table: Any) -> None:
        """The pauses and block-nows of `table` (a `PolicyTable`), for every worker."""
        state = {
            p.name: {"paused_until": p.paused_until, "blocked_until": dict(p.blocked_until)}
            for p in table.policies
        }
        write_file(self.folder / SWITCHES, json.dumps(state, sort_keys=True).encode())

    def apply_switches(self, table: Any) -> bool:
        """Put the shared switches in force in `table`; True when something changed."""
        try:
            state = json.loads((self.folder / SWITCHES).read_bytes())
        except (OSError, ValueError):
            return False
        changed = False
        for name, switch in state.items():
            policy = table.by_name.get(name)
            if policy is None:  # a policy a reload removed
                continue
            if policy.paused_until != switch["paused_until"]:
                policy.paused_until = switch["paused_until"]
                changed = True
            for category, until in switch["blocked_until"].items():
                if policy.blocked_until.get(category) != until:
                    policy.blocked_until[category] = until
                    changed = True
        if changed:
            table.refresh(force=True)
        return changed

    def switches_file(self) -> Path:
        return self.folder / SWITCHES


async def follow(path: Path, apply: Callable[[], object]) -> None:
    """Call `apply()` whenever the file at `path` changes, and once if it is there now
    (runs until cancelled; polled every `POLL_INTERVAL`)."""
    seen = -1
    while True:
        with contextlib.suppress(OSError):
            stamp = path.stat().st_mtime_ns
            if stamp != seen:
                seen = stamp
                try:
                    apply()
                except Exception:  # a half-written file is read again when it changes
                    log.exception("cannot apply %s", path)
        await asyncio.sleep(POLL_INTERVAL)

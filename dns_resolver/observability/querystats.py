"""The console's overview numbers: counters and bounded top-k sketches over time buckets.

Fed by the query log's writer thread with the same rows the store gets
(`QueryLog.sinks`), so the query path pays nothing, and read by the overview. Memory and
the cost of a read are bounded whatever the query rate: per bucket a few counters, a
dictionary per dimension (result, category, policy: few distinct values) and three
Space-Saving sketches of `TOP_K` entries (names, blocked names, clients).

Three resolutions serve the three windows: 1 h reads 5-minute buckets, 24 h and 7 d read
hourly ones; the per-second rate over time comes from 1-minute counters (7 days of them).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from dns_resolver.observability.querystore import COLUMNS, Row

TOP_K = 100
RECENT_CLIENTS = 1000  # clients remembered for the clients page, least recent dropped
LAST_QUERIES = 5
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
POINTS = 60  # points drawn in a window's chart

_CLIENT = COLUMNS.index("client")
_QNAME = COLUMNS.index("qname")
_RESULT = COLUMNS.index("result")
_CATEGORY = COLUMNS.index("category")
_POLICY = COLUMNS.index("policy")
_CLIENT_WHY = COLUMNS.index("client_why")
_CACHED = COLUMNS.index("cached")
_LATENCY = COLUMNS.index("latency_ms")


class SpaceSaving:
    """Metwally et al.'s Space-Saving: the heaviest hitters of a stream in bounded memory.

    Evictions are batched: the table grows to `2k` entries, then keeps its `k` largest,
    and a new item starts from the largest count evicted (`floor`), as Space-Saving's
    newcomer inherits the evicted minimum. So an add costs O(1) amortised instead of a
    scan for the minimum, and every item whose true count is above N/k is still kept,
    each kept count overestimating by at most `floor`.
    """

    __slots__ = ("counts", "floor", "k")

    def __init__(self, k: int = TOP_K) -> None:
        self.k = k
        self.counts: dict[str, int] = {}
        self.floor = 0

    def add(self, item: str, n: int = 1) -> None:
        counts = self.counts
        if item in counts:
            counts[item] += n
            return
        counts[item] = self.floor + n
        if len(counts) >= 2 * self.k:
            self._trim()

    def _trim(self) -> None:
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])
        self.floor = max(self.floor, ranked[self.k][1])
        self.counts = dict(ranked[: self.k])

    def merge(self, other: SpaceSaving) -> None:
        """Add another sketch's counts (the union is trimmed back to `k`)."""
        for item, n in other.counts.items():
            self.counts[item] = self.counts.get(item, 0) + n
        self.floor += other.floor
        if len(self.counts) > self.k:
            self._trim()

    def top(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


_get_result = itemgetter(_RESULT)
_get_qname = itemgetter(_QNAME)
_get_client = itemgetter(_CLIENT)
_get_category = itemgetter(_CATEGORY)
_get_policy = itemgetter(_POLICY)
_get_cached = itemgetter(_CACHED)
_get_ts = itemgetter(0)


class Counts:
    """A batch of rows counted exactly, with C-speed passes (`Counter` over `itemgetter`)
    rather than Python code per row: the sketches then take one `add` per distinct name
    or client of the batch, not one per row."""

    __slots__ = ("blocked_names", "by_category", "by_policy", "by_result", "cached",
                 "clients", "latency_ms", "latency_n", "names", "total")  # fmt: skip

    def __init__(self, rows: Sequence[Row]) -> None:
        self.total = len(rows)
        self.by_result = Counter(map(_get_result, rows))
        if None in self.by_result:
            self.by_result["?"] += self.by_result.pop(None)
        self.by_category = Counter(map(_get_category, rows))
        self.by_category.pop(None, None)
        self.by_policy = Counter(map(_get_policy, rows))
        self.by_policy.pop(None, None)
        self.names = Counter(map(_get_qname, rows))
        self.clients = Counter(map(_get_client, rows))
        self.clients.pop(None, None)
        self.clients.pop("", None)
        self.cached = sum(map(_get_cached, rows))
        self.blocked_names: Counter[str] = Counter()
        if self.by_result.get("blocked"):
            self.blocked_names.update(r[_QNAME] for r in rows if r[_RESULT] == "blocked")
        # Upstream latency: answers that were neither cached nor decided here.
        latencies = [r[_LATENCY] for r in rows if not r[_CACHED] and r[_LATENCY] is not None
                     and r[_RESULT] not in _NO_UPSTREAM]  # fmt: skip
        self.latency_ms = sum(latencies)
        self.latency_n = len(latencies)


_NO_UPSTREAM = frozenset(("blocked", "refused", "ratelimited", "local"))


class Bucket:
    """One time bucket's counters and sketches."""

    __slots__ = ("blocked", "cached", "clients", "latency_ms", "latency_n", "names",
                 "by_category", "by_policy", "by_result", "blocked_names", "total")  # fmt: skip

    def __init__(self) -> None:
        self.total = 0
        self.blocked = 0
        self.cached = 0
        self.latency_ms = 0.0
        self.latency_n = 0
        self.by_result: Counter[str] = Counter()
        self.by_category: Counter[str] = Counter()
        self.by_policy: Counter[str] = Counter()
        self.names = SpaceSaving()
        self.blocked_names = SpaceSaving()
        self.clients = SpaceSaving()

    def add(self, counts: Counts) -> None:
        """Add a batch's counts (`Counts`: one pass over its rows serves both rings)."""
        self.total += counts.total
        self.blocked += counts.by_result.get("blocked", 0)
        self.cached += counts.cached
        self.latency_ms += counts.latency_ms
        self.latency_n += counts.latency_n
        self.by_result.update(counts.by_result)
        self.by_category.update(counts.by_category)
        self.by_policy.update(counts.by_policy)
        for sketch, exact in ((self.names, counts.names), (self.clients, counts.clients),
                              (self.blocked_names, counts.blocked_names)):  # fmt: skip
            add = sketch.add
            for item, n in exact.items():
                add(item, n)

    def merge(self, other: Bucket) -> None:
        self.total += other.total
        self.blocked += other.blocked
        self.cached += other.cached
        self.latency_ms += other.latency_ms
        self.latency_n += other.latency_n
        self.by_result.update(other.by_result)
        self.by_category.update(other.by_category)
        self.by_policy.update(other.by_policy)
        self.names.merge(other.names)
        self.blocked_names.merge(other.blocked_names)
        self.clients.merge(other.clients)


class Ring:
    """`size` buckets of `width` seconds, the oldest replaced as time moves on."""

    def __init__(self, width: int, size: int) -> None:
        self.width = width
        self.size = size
        self.slots: dict[int, Bucket] = {}  # bucket number (time // width) -> bucket

    def bucket(self, ts: float) -> Bucket:
        number = int(ts // self.width)
        found = self.slots.get(number)
        if found is None:
            found = self.slots[number] = Bucket()
            for old in [n for n in self.slots if n <= number - self.size]:
                del self.slots[old]
        return found

    def since(self, start: float) -> list[Bucket]:
        first = int(start // self.width)
        return [b for n, b in self.slots.items() if n >= first]


class QueryStats:
    """The overview's aggregates, fed rows by the writer thread (`add`), read by `summary`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fine = Ring(300, 13)  # the last hour, in 5-minute buckets
        self.hourly = Ring(3600, 7 * 24 + 1)
        self.minutes: dict[int, tuple[int, int]] = {}  # minute -> (queries, blocked)
        self.clients: OrderedDict[str, ClientSeen] = OrderedDict()
        self.changes = 0  # batches added: a publisher tells new numbers by it

    def state(self) -> bytes:
        """Everything `summary` and `recent_clients` read, pickled (`from_state`): what a
        worker publishes for the console worker to merge (workershare.py)."""
        with self._lock:
            return pickle.dumps(
                (self.fine.slots, self.hourly.slots, self.minutes, self.clients), protocol=5
            )

    @classmethod
    def from_state(cls, data: bytes) -> QueryStats:
        out = cls()
        out.fine.slots, out.hourly.slots, out.minutes, out.clients = pickle.loads(data)
        return out

    def add(self, rows: Sequence[Row]) -> None:
        """Count a batch of rows (the writer's): counted once per 5-minute bucket it
        touches (usually one), then added to that bucket and to its hour's."""
        if not rows:
            return
        width = self.fine.width
        if int(min(map(_get_ts, rows)) // width) == int(max(map(_get_ts, rows)) // width):
            groups = {rows[0][0]: rows}
        else:
            groups = {}
            for row in rows:
                groups.setdefault(row[0] // width * width, []).append(row)
        minutes = Counter(int(ts // 60) for ts in map(_get_ts, rows))
        blocked = Counter(int(r[0] // 60) for r in rows if r[_RESULT] == "blocked")
        by_client: dict[str, list[Row]] = {}
        for row in rows:
            if row[_CLIENT]:
                by_client.setdefault(row[_CLIENT], []).append(row)
        with self._lock:
            self.changes += 1
            for ts, group in groups.items():
                counts = Counts(group)
                self.fine.bucket(ts).add(counts)
                self.hourly.bucket(ts).add(counts)
            for minute, n in minutes.items():
                total, was_blocked = self.minutes.get(minute, (0, 0))
                self.minutes[minute] = (total + n, was_blocked + blocked.get(minute, 0))
            for client, mine in by_client.items():
                self._seen(client, mine)
            if len(self.minutes) > 7 * 24 * 60 + 60:
                horizon = int(time.time() // 60) - 7 * 24 * 60
                for old in [m for m in self.minutes if m < horizon]:
                    del self.minutes[old]

    def add_lost(self, lost: dict[tuple[int, str], int]) -> None:
        """Count rows that were dropped before they reached the writer: {(minute, result):
        rows}. The queries, results, blocked share, cache hit rate and chart stay exact;
        the dropped rows' names, clients, categories and policies are not known."""
        with self._lock:
            self.changes += 1
            for (minute, result), n in lost.items():
                ts = minute * 60
                blocked = n if result == "blocked" else 0
                for ring in (self.fine, self.hourly):
                    bucket = ring.bucket(ts)
                    bucket.total += n
                    bucket.blocked += blocked
                    bucket.cached += n if result == "cached" else 0
                    bucket.by_result[result] += n
                total, was_blocked = self.minutes.get(minute, (0, 0))
                self.minutes[minute] = (total + n, was_blocked + blocked)

    def _seen(self, client: str, rows: list[Row]) -> None:
        seen = self.clients.get(client)
        if seen is None:
            seen = self.clients[client] = ClientSeen(client)
            if len(self.clients) > RECENT_CLIENTS:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(client)
        seen.add(rows)

    def recent_clients(self, limit: int = 100) -> list[dict[str, Any]]:
        """The clients seen most recently first."""
        return merged_clients([self], limit)

    def summary(self, window: str, now: float | None = None, top: int = 10) -> dict[str, Any]:
        """The numbers of the overview for `window` ("1h", "24h" or "7d")."""
        return merged_summary([self], window, now, top)


class StatsGroup:
    """The overview of several workers: this one's `QueryStats` and the others' published
    ones (`peers`), merged at read time. Reads like a `QueryStats`."""

    def __init__(self, own: QueryStats, peers: Callable[[], list[QueryStats]]) -> None:
        self.own = own
        self.peers = peers

    def recent_clients(self, limit: int = 100) -> list[dict[str, Any]]:
        return merged_clients([self.own, *self.peers()], limit)

    def summary(self, window: str, now: float | None = None, top: int = 10) -> dict[str, Any]:
        return merged_summary([self.own, *self.peers()], window, now, top)


def merged_clients(parts: Sequence[QueryStats], limit: int = 100) -> list[dict[str, Any]]:
    """The clients seen most recently first, each once whichever workers it reached."""
    seen: dict[str, ClientSeen] = {}
    for stats in parts:
        with stats._lock:
            for client in reversed(stats.clients.values()):  # the latest first at ties
                found = seen.get(client.client)
                if found is None:
                    seen[client.client] = found = ClientSeen(client.client)
                found.merge(client)
    recent = sorted(seen.values(), key=lambda c: -c.last_seen)[:limit]
    return [c.as_dict() for c in recent]


def merged_summary(
    parts: Sequence[QueryStats], window: str, now: float | None = None, top: int = 10
) -> dict[str, Any]:
    """The numbers of the overview for `window` ("1h", "24h" or "7d") over `parts`:
    counters added, sketches merged (summed, then trimmed back to k)."""
    seconds = WINDOWS[window]
    now = time.time() if now is None else now
    start = now - seconds
    merged = Bucket()
    minutes: Counter[int] = Counter()
    blocked_minutes: Counter[int] = Counter()
    for stats in parts:
        ring = stats.fine if window == "1h" else stats.hourly
        with stats._lock:
            for bucket in ring.since(start):
                merged.merge(bucket)
            for minute, (total, blocked) in stats.minutes.items():
                minutes[minute] += total
                blocked_minutes[minute] += blocked
    # The chart ends with the minute under way, so the last queries show at once.
    series = _series(minutes, blocked_minutes, (int(now // 60) + 1) * 60 - seconds, seconds)
    answered = merged.total
    return {
        "window": window,
        "queries": merged.total,
        "blocked": merged.blocked,
        "blocked_share": merged.blocked / answered if answered else 0.0,
        "cache_hit_rate": merged.cached / answered if answered else 0.0,
        "upstream_latency_ms": (
            round(merged.latency_ms / merged.latency_n, 3) if merged.latency_n else None
        ),
        "by_result": dict(merged.by_result.most_common()),
        "by_category": dict(merged.by_category.most_common()),
        "by_policy": dict(merged.by_policy.most_common()),
        "top_queried": _pairs(merged.names.top(top)),
        "top_blocked": _pairs(merged.blocked_names.top(top)),
        "top_clients": _pairs(merged.clients.top(top)),
        "series": series,
    }


def _series(
    minutes: Counter[int], blocked_minutes: Counter[int], start: float, seconds: int
) -> list[dict[str, float]]:
    """POINTS points of (time, queries/s, blocked share) over the window."""
    step = seconds / POINTS
    out = []
    for i in range(POINTS):
        lo = int((start + i * step) // 60)
        hi = int((start + (i + 1) * step) // 60)
        total = blocked = 0
        for minute in range(lo, max(hi, lo + 1)):
            total += minutes[minute]
            blocked += blocked_minutes[minute]
        out.append({
            "time": round(start + i * step, 3),
            "qps": round(total / step, 4),
            "blocked_share": round(blocked / total, 4) if total else 0.0,
        })  # fmt: skip
    return out


class ClientSeen:
    """One client as the clients page shows it."""

    __slots__ = ("blocked", "client", "client_why", "last", "last_seen", "policy", "queries")

    def __init__(self, client: str) -> None:
        self.client = client
        self.queries = 0
        self.blocked = 0
        self.last_seen = 0.0
        self.policy: str | None = None
        self.client_why: str | None = None
        self.last: deque[tuple[float, str, str]] = deque(maxlen=LAST_QUERIES)

    def add(self, rows: list[Row]) -> None:
        """This client's rows of a batch, in the order they came."""
        self.queries += len(rows)
        self.blocked += sum(1 for r in rows if r[_RESULT] == "blocked")
        self.last_seen = max(self.last_seen, max(map(_get_ts, rows)))
        for row in reversed(rows):
            if row[_POLICY]:
                self.policy, self.client_why = row[_POLICY], row[_CLIENT_WHY]
                break
        self.last.extend((r[0], r[_QNAME], r[_RESULT]) for r in rows[-LAST_QUERIES:])

    def merge(self, other: ClientSeen) -> None:
        """Add what another worker saw of the same client."""
        self.queries += other.queries
        self.blocked += other.blocked
        if other.policy and (other.last_seen >= self.last_seen or not self.policy):
            self.policy, self.client_why = other.policy, other.client_why
        self.last_seen = max(self.last_seen, other.last_seen)
        latest = sorted([*self.last, *other.last])[-LAST_QUERIES:]
        self.last.clear()
        self.last.extend(latest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "last_seen": self.last_seen,
            "queries": self.queries,
            "blocked": self.blocked,
            "policy": self.policy,
            "why": self.client_why,
            "last_queries": [
                {"time": t, "name": name, "result": result}
                for t, name, result in reversed(self.last)
            ],
        }


def _pairs(items: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"name": name, "count": count} for name, count in items]

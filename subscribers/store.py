"""The subscribers' storage: SQLite (WAL) in the data directory by default, PostgreSQL by URL,
with the report queue's engine and migration machinery (reports.store).

Every change writes the subscriber rows and, in the same transaction, one row per address
whose mapping changed into `subscriber_changes`; every node tails that log to keep its
serving table current (subscribers.service). On PostgreSQL the transaction also sends
`NOTIFY filterdns_subscribers`, so other nodes look at once instead of at their next poll.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from reports.models import utcnow
from reports.store import NotFound, iso, make_engine
from subscribers.addresses import containing
from subscribers.input import SubscriberInput
from subscribers.models import (
    subscriber_addresses,
    subscriber_allowances,
    subscriber_changes,
    subscriber_lists,
    subscribers,
)

if TYPE_CHECKING:
    from fdconfig import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DATABASE_FILE = "subscribers.db"
CHANNEL = "filterdns_subscribers"
LOCK_KEY = 0x66647375  # the advisory lock of the change log's writers
CHUNK = 500  # values in one IN (...)

__all__ = ["CHANNEL", "Change", "NotFound", "SessionChange", "SubscriberStore", "database_url"]


@dataclass(frozen=True)
class Change:
    """One address's new mapping: its subscriber's policy and lists id, or None (unmapped)."""

    seq: int
    address: str
    subscriber_id: str | None
    policy: str | None
    lists_id: int | None


class SessionChange(NamedTuple):
    """What one RADIUS request changed: addresses the subscriber holds now and did not,
    and addresses it held and does not any more."""

    added: list[str]
    removed: list[str]


def database_url(config: Config, data_dir: str | os.PathLike[str] | None = None) -> str:
    """`subscribers.database`, else SQLite in `data_dir` (or the config's)."""
    if config.subscribers.database:
        return config.subscribers.database
    if data_dir is None:
        from listsync.update import config_data_dir

        data_dir = config_data_dir(config)
    return f"sqlite:///{Path(data_dir).resolve() / DATABASE_FILE}"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema with the Alembic migrations in subscribers/migrations."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def _among(conn: Connection, column: Any, values: Sequence[str]) -> Any:
    """`column IN values`. On PostgreSQL one array parameter (`= ANY`): an import batch's
    thousands of values would otherwise be thousands of parameters to render and send."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String)))
    return column.in_(values)


def _subscriber_dict(row: Any, addresses: Sequence[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "policy": row.policy,
        "addresses": sorted(addresses),
        "allow_domains": json.loads(row.allow_domains),
        "block_domains": json.loads(row.block_domains),
        "updated_at": iso(row.updated_at),
        "updated_by": row.updated_by,
    }


class SubscriberStore:
    """Subscribers in a database; `SubscriberStore(url)` migrates it to the newest schema."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.postgres = self.engine.dialect.name == "postgresql"
        if run_migrations:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @staticmethod
    def _insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """INSERT many rows: PostgreSQL's COPY (one stream, not a statement per row), else
        the driver's executemany (SQLAlchemy's parameter processing costs more than the
        database on an import of a million rows)."""
        if not rows:
            return
        columns = list(rows[0])
        if conn.dialect.name == "postgresql":
            raw = conn.connection.driver_connection
            assert raw is not None
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(tuple(row[c] for c in columns))
            return
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))})"
        )
        conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])

    @contextmanager
    def _write_tx(self) -> Iterator[Connection]:
        """A transaction that writes the change log. On PostgreSQL writers take turns (a
        transaction-level advisory lock), so log rows commit in `seq` order and a node
        tailing the log never passes a row that commits later. It NOTIFYs the other nodes
        with its commit. SQLite's write lock serialises writers already."""
        with self._tx() as conn:
            if self.postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield conn
            if self.postgres:
                conn.execute(text(f"NOTIFY {CHANNEL}"))

    # -- reading --------------------------------------------------------------------------

    def get(self, subscriber_id: str) -> dict[str, Any]:
        """One subscriber. Raises `NotFound`."""
        with self._tx() as conn:
            return self._get(conn, subscriber_id)

    def _get(self, conn: Connection, subscriber_id: str) -> dict[str, Any]:
        row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        if row is None:
            raise NotFound(f"no subscriber {subscriber_id}")
        held = conn.scalars(
            select(subscriber_addresses.c.address).where(
                subscriber_addresses.c.subscriber_id == subscriber_id
            )
        ).all()
        return _subscriber_dict(row, held)

    def holder(self, candidates: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
        """(address, subscriber) of the first of `candidates` (canonical addresses, most
        specific first) that a subscriber holds, or None."""
        with self._tx() as conn:
            rows = dict(
                conn.execute(
                    select(
                        subscriber_addresses.c.address, subscriber_addresses.c.subscriber_id
                    ).where(subscriber_addresses.c.address.in_(candidates))
                ).all()
            )
            for address in candidates:
                if address in rows:
                    return address, self._get(conn, rows[address])
        return None

    def count(self) -> tuple[int, int]:
        """(subscribers, addresses)."""
        with self._tx() as conn:
            n = conn.scalar(select(func.count()).select_from(subscribers)) or 0
            a = conn.scalar(select(func.count()).select_from(subscriber_addresses)) or 0
        return int(n), int(a)

    def own_lists(self, lists_id: int) -> tuple[frozenset[str], frozenset[str]]:
        """(allow, block) names of own-lists row `lists_id` (rows never change)."""
        with self._tx() as conn:
            row = conn.execute(
                select(subscriber_lists).where(subscriber_lists.c.id == lists_id)
            ).first()
        if row is None:
            return frozenset(), frozenset()
        return frozenset(json.loads(row.allow_domains)), frozenset(json.loads(row.block_domains))

    def last_seq(self) -> int:
        with self._tx() as conn:
            return int(conn.scalar(select(func.max(subscriber_changes.c.seq))) or 0)

    def changes_since(self, seq: int, limit: int = 50_000) -> list[Change]:
        """The change log after `seq`, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                select(subscriber_changes)
                .where(subscriber_changes.c.seq > seq)
                .order_by(subscriber_changes.c.seq)
                .limit(limit)
            ).all()
        return [Change(r.seq, r.address, r.subscriber_id, r.policy, r.lists_id) for r in rows]

    def mapping(self) -> tuple[int, list[tuple[str, str, int | None]]]:
        """(log position, [(address, policy, lists id)]) of every held address: a full
        build. The position is read in the same transaction, so tailing from it misses
        nothing."""
        with self._tx() as conn:
            seq = int(conn.scalar(select(func.max(subscriber_changes.c.seq))) or 0)
            rows = conn.execute(
                select(
                    subscriber_addresses.c.address, subscribers.c.policy, subscribers.c.lists_id
                ).join(subscribers, subscribers.c.id == subscriber_addresses.c.subscriber_id)
            ).all()
        return seq, [tuple(r) for r in rows]  # type: ignore[misc]

    # -- changing -------------------------------------------------------------------------

    def put(self, sub: SubscriberInput, who: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Create or replace a subscriber (its addresses too); (before, after)."""
        with self._write_tx() as conn:
            try:
                before: dict[str, Any] | None = self._get(conn, sub.id)
            except NotFound:
                before = None
            self._write([sub], who, conn)
            after = self._get(conn, sub.id)
        return before, after

    def import_rows(self, rows: Iterable[SubscriberInput], who: str, batch: int = 2000) -> int:
        """Create or replace many subscribers, `batch` per transaction; how many."""
        done = 0
        chunk: list[SubscriberInput] = []
        for sub in rows:
            chunk.append(sub)
            if len(chunk) >= batch:
                done += self.import_batch(chunk, who)
                chunk = []
        if chunk:
            done += self.import_batch(chunk, who)
        return done

    def import_batch(self, chunk: Sequence[SubscriberInput], who: str) -> int:
        """One transaction of `import_rows`."""
        # The last row of an id wins, as if each had been PUT in turn.
        unique = list({sub.id: sub for sub in chunk}.values())
        with self._write_tx() as conn:
            self._write(unique, who, conn)
        return len(chunk)

    def _write(self, subs: Sequence[SubscriberInput], who: str, conn: Connection) -> None:
        ids = [s.id for s in subs]
        now = utcnow()
        old = {
            r.id: r
            for r in conn.execute(
                select(
                    subscribers.c.id,
                    subscribers.c.allow_domains,
                    subscribers.c.block_domains,
                    subscribers.c.lists_id,
                ).where(_among(conn, subscribers.c.id, ids))
            )
        }
        rows = []
        for sub in subs:
            allow = json.dumps(list(sub.allow_domains)) if sub.allow_domains else "[]"
            block = json.dumps(list(sub.block_domains)) if sub.block_domains else "[]"
            prev = old.get(sub.id)
            if not sub.allow_domains and not sub.block_domains:
                lists_id = None
            elif prev is not None and (prev.allow_domains, prev.block_domains) == (allow, block):
                lists_id = prev.lists_id
            else:
                lists_id = conn.execute(
                    insert(subscriber_lists)
                    .values(subscriber_id=sub.id, allow_domains=allow, block_domains=block)
                    .returning(subscriber_lists.c.id)
                ).scalar_one()
            rows.append(
                {
                    "id": sub.id,
                    "policy": sub.policy,
                    "allow_domains": allow,
                    "block_domains": block,
                    "lists_id": lists_id,
                    "updated_at": now,
                    "updated_by": who,
                }
            )
        # A PUT replaces the provisioned (api) addresses; RADIUS sessions stay, with the
        # new policy. An address another subscriber held moves to this one.
        wanted = {a: s.id for s in subs for a in s.addresses}
        held = conn.execute(
            select(
                subscriber_addresses.c.address,
                subscriber_addresses.c.subscriber_id,
                subscriber_addresses.c.origin,
            ).where(
                _among(conn, subscriber_addresses.c.subscriber_id, ids)
                | _among(conn, subscriber_addresses.c.address, list(wanted))
            )
        ).all()
        kept = {a: sid for a, sid, origin in held if origin == "radius" and a not in wanted}
        kept = {a: sid for a, sid in kept.items() if sid in set(ids)}
        replaced = [a for a, _sid, _origin in held if a not in kept]
        if replaced:
            conn.execute(
                delete(subscriber_addresses).where(
                    _among(conn, subscriber_addresses.c.address, replaced)
                )
            )
        existing = [r for r in rows if r["id"] in old]
        if existing and self.postgres:
            # Replaced rows: COPY to a scratch table, then one UPDATE joining it.
            conn.exec_driver_sql(
                "CREATE TEMP TABLE IF NOT EXISTS subscribers_replaced "
                "(LIKE subscribers) ON COMMIT DELETE ROWS"
            )
            self._insert(conn, Table("subscribers_replaced", MetaData()), existing)
            columns = [k for k in existing[0] if k != "id"]
            conn.exec_driver_sql(
                f"UPDATE subscribers AS s SET {', '.join(f'{c} = r.{c}' for c in columns)} "
                "FROM subscribers_replaced AS r WHERE s.id = r.id"
            )
        elif existing:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == bindparam("b_id"))
                .values({k: bindparam(k) for k in rows[0] if k != "id"}),
                [{**r, "b_id": r["id"]} for r in existing],
            )
        fresh = [r for r in rows if r["id"] not in old]
        self._insert(conn, subscribers, fresh)
        self._insert(
            conn,
            subscriber_addresses,
            [
                {"address": a, "subscriber_id": sid, "origin": "api", "session": None}
                for a, sid in wanted.items()
            ],
        )
        by_id = {r["id"]: r for r in rows}
        changes = [
            {
                "address": a,
                "subscriber_id": sid,
                "policy": by_id[sid]["policy"],
                "lists_id": by_id[sid]["lists_id"],
            }
            for a, sid in (*wanted.items(), *kept.items())
        ]
        changes += [
            {"address": a, "subscriber_id": None, "policy": None, "lists_id": None}
            for a in replaced
            if a not in wanted
        ]
        self._insert(conn, subscriber_changes, changes)

    def delete(self, subscriber_id: str) -> dict[str, Any]:
        """Remove a subscriber and unmap its addresses; what it was. Raises `NotFound`."""
        with self._write_tx() as conn:
            before = self._get(conn, subscriber_id)
            conn.execute(
                delete(subscriber_addresses).where(
                    subscriber_addresses.c.subscriber_id == subscriber_id
                )
            )
            conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id))
            if before["addresses"]:
                conn.execute(
                    insert(subscriber_changes),
                    [
                        {"address": a, "subscriber_id": None, "policy": None, "lists_id": None}
                        for a in before["addresses"]
                    ],
                )
        return before

    def session(
        self, subscriber_id: str, session: str, addresses: Sequence[str], stop: bool = False
    ) -> bool:
        """RADIUS: the accounting session `session` of a subscriber now holds `addresses`
        (Start, Interim-Update) or nothing (`stop`). False when the subscriber is unknown
        (not provisioned: it keeps the policy of its address's network)."""
        return self.sessions([(subscriber_id, session, addresses, stop)])[0] is not None

    def sessions(
        self, updates: Sequence[tuple[str, str, Sequence[str], bool]]
    ) -> list[SessionChange | None]:
        """Several `session` updates in one transaction (one commit for a burst of RADIUS
        requests), in order; each one's change of addresses, or None when the subscriber
        is unknown."""
        with self._write_tx() as conn:
            return [self._session(conn, *update) for update in updates]

    def _session(
        self,
        conn: Connection,
        subscriber_id: str,
        session: str,
        addresses: Sequence[str],
        stop: bool,
    ) -> SessionChange | None:
        row = conn.execute(
            select(subscribers.c.policy, subscribers.c.lists_id).where(
                subscribers.c.id == subscriber_id
            )
        ).first()
        if row is None:
            return None
        ours = set(
            conn.scalars(
                select(subscriber_addresses.c.address).where(
                    subscriber_addresses.c.subscriber_id == subscriber_id,
                    subscriber_addresses.c.origin == "radius",
                    subscriber_addresses.c.session == session,
                )
            ).all()
        )
        new = set() if stop else set(addresses)
        gone = ours - new
        changes: list[dict[str, Any]] = []
        if gone:
            conn.execute(
                delete(subscriber_addresses).where(subscriber_addresses.c.address.in_(gone))
            )
            changes += [
                {"address": a, "subscriber_id": None, "policy": None, "lists_id": None}
                for a in sorted(gone)
            ]
        added = new - ours
        if added:
            conn.execute(
                delete(subscriber_addresses).where(subscriber_addresses.c.address.in_(added))
            )
            self._insert(
                conn,
                subscriber_addresses,
                [
                    {
                        "address": a,
                        "subscriber_id": subscriber_id,
                        "origin": "radius",
                        "session": session,
                    }
                    for a in sorted(added)
                ],
            )
            changes += [
                {
                    "address": a,
                    "subscriber_id": subscriber_id,
                    "policy": row.policy,
                    "lists_id": row.lists_id,
                }
                for a in sorted(added)
            ]
        if changes:
            self._insert(conn, subscriber_changes, changes)
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(updated_at=utcnow(), updated_by="radius")
            )
        return SessionChange(sorted(added), sorted(gone))

    def prune_changes(self, keep: int = 1_000_000) -> int:
        """Drop all but the newest `keep` log rows; a node further behind does a full
        resync (it notices the gap). How many were dropped."""
        with self._tx() as conn:
            last = int(conn.scalar(select(func.max(subscriber_changes.c.seq))) or 0)
            result = conn.execute(
                delete(subscriber_changes).where(subscriber_changes.c.seq <= last - keep)
            )
        return int(result.rowcount or 0)

    def first_seq(self) -> int:
        with self._tx() as conn:
            return int(conn.scalar(select(func.min(subscriber_changes.c.seq))) or 0)

    # -- daily allowances (subscribers.allowances) ---------------------------------------

    def holders(self, clients: Sequence[str]) -> dict[str, str]:
        """Client address -> the id of the subscriber holding it now (the longest prefix),
        for those of `clients` that a subscriber holds: one query per `CHUNK` candidates."""
        wanted: dict[str, list[str]] = {}
        for client in clients:
            try:
                wanted[client] = containing(client.split("%", 1)[0])
            except ValueError:
                continue
        candidates = sorted({c for cs in wanted.values() for c in cs})
        held: dict[str, str] = {}
        with self._tx() as conn:
            for i in range(0, len(candidates), CHUNK):
                rows = conn.execute(
                    select(
                        subscriber_addresses.c.address, subscriber_addresses.c.subscriber_id
                    ).where(subscriber_addresses.c.address.in_(candidates[i : i + CHUNK]))
                ).all()
                held.update((address, sid) for address, sid in rows)
        return {
            client: held[found]
            for client, cs in wanted.items()
            if (found := next((c for c in cs if c in held), None)) is not None
        }

    def add_minutes(self, rows: Sequence[tuple[str, str, str, int]]) -> None:
        """Record used allowance minutes `(day, subscriber id, category, minute)`; a minute
        another node or worker recorded already is kept once."""
        dialect = postgresql if self.postgres else sqlite
        statement = dialect.insert(subscriber_allowances).on_conflict_do_nothing()
        with self._tx() as conn:
            conn.execute(
                statement,
                [{"day": d, "subscriber_id": s, "category": c, "minute": m} for d, s, c, m in rows],
            )

    def minutes(
        self, subscriber_ids: Sequence[str], since: str
    ) -> dict[tuple[str, str, str], int]:
        """(day, subscriber id, category) -> minutes used, for days from `since` on."""
        t = subscriber_allowances
        out: dict[tuple[str, str, str], int] = {}
        with self._tx() as conn:
            for i in range(0, len(subscriber_ids), CHUNK):
                rows = conn.execute(
                    select(t.c.day, t.c.subscriber_id, t.c.category, func.count())
                    .where(t.c.subscriber_id.in_(subscriber_ids[i : i + CHUNK]), t.c.day >= since)
                    .group_by(t.c.day, t.c.subscriber_id, t.c.category)
                ).all()
                out.update({(d, s, c): int(n) for d, s, c, n in rows})
        return out

    def prune_minutes(self, before: str) -> int:
        """Forget allowance minutes of days before `before`; how many."""
        with self._tx() as conn:
            result = conn.execute(
                delete(subscriber_allowances).where(subscriber_allowances.c.day < before)
            )
        return int(result.rowcount or 0)

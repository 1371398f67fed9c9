"""The report queue's storage: SQLite (WAL) by default, PostgreSQL by URL, same schema.

`Store(url)` opens the database and brings its schema to the newest Alembic migration.
Every method is one transaction that is committed before it returns, so a report answered
with a 2xx is durable (SQLite runs with `synchronous=FULL`). Methods are synchronous:
the API calls them from a worker thread so the event loop keeps answering DNS.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reports.models import Decision, Override, Report, Token, utcnow
from reports.submission import DecisionInput, Submission
from reports.tokens import hash_token, new_token
from reports.vocabulary import OVERRIDE_ACTIONS, ROLES, STATUSES

if TYPE_CHECKING:
    from fdconfig import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DATABASE_FILE = "reports.db"


class NotFound(LookupError):
    """No row with that id."""


class Conflict(ValueError):
    """The request contradicts the stored state (e.g. deciding a decided report)."""


@dataclass(frozen=True)
class TokenInfo:
    """Who a valid token belongs to (never the token or its hash)."""

    id: int
    name: str
    role: str

    @property
    def identity(self) -> str:
        """How audit records and decisions name the reviewer."""
        return f"{self.name} (token {self.id})"


@dataclass(frozen=True)
class Accepted:
    """A stored submission: its report id, how often it was reported, whether merged."""

    id: int
    count: int
    duplicate: bool


@dataclass(frozen=True)
class Decided:
    """A stored decision and the override change it made (None for reject)."""

    decision: dict[str, Any]
    report: dict[str, Any]
    override: dict[str, Any] | None
    previous: dict[str, Any] | None


def data_dir_url(data_dir: str | os.PathLike[str]) -> str:
    """The default database: SQLite in the data directory."""
    return f"sqlite:///{Path(data_dir).resolve() / DATABASE_FILE}"


def database_url(config: Config, data_dir: str | os.PathLike[str] | None = None) -> str:
    """`reports.database` of the config, else SQLite in `data_dir` (or the config's)."""
    if config.reports.database:
        return config.reports.database
    if data_dir is None:
        from listsync.update import config_data_dir

        data_dir = config_data_dir(config)
    return data_dir_url(data_dir)


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 UTC ("Z"); SQLite hands back naive datetimes, in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def report_dict(report: Report) -> dict[str, Any]:
    """The JSON shape of a report (the API's `Report` schema)."""
    return {
        "id": report.id,
        "target": report.target,
        "host": report.host,
        "kind": report.kind,
        "category": report.category,
        "list": report.list_name,
        "policy": report.policy,
        "comment": report.comment,
        "count": report.count,
        "status": report.status,
        "reporter": report.reporter,
        "source": report.source,
        "evidence": json.loads(report.evidence) if report.evidence else None,
        "created_at": iso(report.created_at),
        "updated_at": iso(report.updated_at),
    }


def decision_dict(decision: Decision) -> dict[str, Any]:
    """The JSON shape of a decision."""
    return {
        "id": decision.id,
        "report_id": decision.report_id,
        "action": decision.action,
        "category": decision.category,
        "reason": decision.reason,
        "reviewer": decision.reviewer,
        "created_at": iso(decision.created_at),
    }


def override_dict(override: Override) -> dict[str, Any]:
    """The JSON shape of an override."""
    return {
        "host": override.host,
        "action": override.action,
        "category": override.category,
        "decided_by": override.decided_by,
        "reason": override.reason,
        "report_id": override.report_id,
        "updated_at": iso(override.updated_at),
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (the review page) run while a report is written; FULL sync makes a
    commit survive power loss, which the 2xx promises; foreign keys are off by default."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder created and the pragmas above."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return engine
    if url.startswith(("postgresql://", "postgres://")):
        # The driver filterdns depends on is psycopg 3; SQLAlchemy's default is psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` with the Alembic migrations in reports/migrations."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


class Store:
    """The report queue. `Store(url)` migrates the database to the newest schema."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- reports ------------------------------------------------------------------------

    def submit(self, sub: Submission, reporter: str | None) -> Accepted:
        """Store a report, or merge it into the open report of the same target and kind.

        The merge is one UPDATE ... RETURNING; when there is nothing to merge into, an
        INSERT follows, and if a concurrent submission inserted first (the partial unique
        index says so) the merge is tried again. No submission is lost either way.
        """
        for _ in range(5):
            with self._tx() as session:
                merged = session.execute(
                    update(Report)
                    .where(
                        Report.target == sub.target,
                        Report.kind == sub.kind,
                        Report.status == "open",
                    )
                    .values(count=Report.count + 1, updated_at=utcnow())
                    .returning(Report.id, Report.count)
                ).first()
                if merged is not None:
                    report_id, count = merged  # (`.count` would be the tuple method)
                    return Accepted(id=report_id, count=count, duplicate=True)
            try:
                with self._tx() as session:
                    report = Report(
                        target=sub.target,
                        host=sub.host,
                        kind=sub.kind,
                        category=sub.category,
                        list_name=sub.list_name,
                        policy=sub.policy,
                        comment=sub.comment,
                        count=1,
                        status="open",
                        reporter=reporter,
                    )
                    session.add(report)
                    session.flush()
                    return Accepted(id=report.id, count=1, duplicate=False)
            except IntegrityError:
                continue  # someone inserted the same open target meanwhile: merge into it
        raise RuntimeError(f"could not store a report of {sub.target} (constant contention)")

    def submit_lead(self, host: str, category: str | None, evidence: dict[str, Any]) -> Accepted:
        """Store a lead (kind "lead", source "observed"), or refresh the evidence of the open
        lead of the same host (its `count` counts how often it was raised)."""
        text = json.dumps(evidence, sort_keys=True)
        for _ in range(5):
            with self._tx() as session:
                merged = session.execute(
                    update(Report)
                    .where(Report.target == host, Report.kind == "lead", Report.status == "open")
                    .values(count=Report.count + 1, evidence=text, updated_at=utcnow())
                    .returning(Report.id, Report.count)
                ).first()
                if merged is not None:
                    report_id, count = merged
                    return Accepted(id=report_id, count=count, duplicate=True)
            try:
                with self._tx() as session:
                    report = Report(
                        target=host,
                        host=host,
                        kind="lead",
                        category=category,
                        count=1,
                        status="open",
                        source="observed",
                        evidence=text,
                    )
                    session.add(report)
                    session.flush()
                    return Accepted(id=report.id, count=1, duplicate=False)
            except IntegrityError:
                continue
        raise RuntimeError(f"could not store a lead for {host} (constant contention)")

    def queue(
        self,
        status: str | None = "open",
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Reports, most reported first, then oldest first; and how many match in all."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        query = select(Report)
        counting = select(func.count()).select_from(Report)
        if status is not None:
            query = query.where(Report.status == status)
            counting = counting.where(Report.status == status)
        if kind is not None:
            query = query.where(Report.kind == kind)
            counting = counting.where(Report.kind == kind)
        query = (
            query.order_by(Report.count.desc(), Report.created_at.asc(), Report.id.asc())
            .limit(limit)
            .offset(offset)
        )
        with self._tx() as session:
            rows = [report_dict(r) for r in session.scalars(query)]
            total = int(session.scalar(counting) or 0)
        return rows, total

    def report(self, report_id: int) -> dict[str, Any]:
        """One report with its decisions.

        Raises:
            NotFound: no such report.
        """
        with self._tx() as session:
            report = session.get(Report, report_id)
            if report is None:
                raise NotFound(f"no report {report_id}")
            out = report_dict(report)
            out["decisions"] = [decision_dict(d) for d in report.decisions]
        return out

    def decide(self, report_id: int, decision: DecisionInput, reviewer: str) -> Decided:
        """Record a decision on an open report; block/allow also set the host's override.

        Raises:
            NotFound: no such report.
            Conflict: the report was already decided.
        """
        with self._tx() as session:
            report = session.get(Report, report_id, with_for_update=True)
            if report is None:
                raise NotFound(f"no report {report_id}")
            if report.status != "open":
                raise Conflict(f"report {report_id} was already decided")
            row = Decision(
                report_id=report.id,
                action=decision.action,
                category=decision.category,
                reason=decision.reason,
                reviewer=reviewer,
            )
            session.add(row)
            report.status = "decided"
            report.updated_at = utcnow()
            override = previous = None
            if decision.action in OVERRIDE_ACTIONS:
                override, previous = self._set_override(
                    session, report.host, decision, reviewer, report.id
                )
            session.flush()
            return Decided(
                decision=decision_dict(row),
                report=report_dict(report),
                override=override,
                previous=previous,
            )

    # -- overrides ----------------------------------------------------------------------

    def _set_override(
        self,
        session: Session,
        host: str,
        decision: DecisionInput,
        reviewer: str,
        report_id: int | None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        existing = session.scalars(
            select(Override).where(Override.host == host).with_for_update()
        ).first()
        previous = override_dict(existing) if existing is not None else None
        if existing is None:
            existing = Override(host=host)
            session.add(existing)
        existing.action = decision.action
        existing.category = decision.category if decision.action == "block" else None
        existing.decided_by = reviewer
        existing.reason = decision.reason
        existing.report_id = report_id
        existing.updated_at = utcnow()
        session.flush()
        return override_dict(existing), previous

    def overrides(self) -> list[dict[str, Any]]:
        """Every override, by host."""
        with self._tx() as session:
            return [
                override_dict(o) for o in session.scalars(select(Override).order_by(Override.host))
            ]

    def overrides_version(self) -> tuple[int, str | None, int]:
        """A cheap fingerprint of the override table (rows, newest change, id sum): another
        node sharing the database changed the overrides when it differs."""
        with self._tx() as session:
            count, newest, ids = session.execute(
                select(func.count(), func.max(Override.updated_at), func.sum(Override.id))
            ).one()
        return int(count or 0), iso(newest), int(ids or 0)

    def delete_override(self, host: str) -> dict[str, Any]:
        """Remove the override of `host`; returns what it was.

        Raises:
            NotFound: `host` has no override.
        """
        with self._tx() as session:
            existing = session.scalars(select(Override).where(Override.host == host)).first()
            if existing is None:
                raise NotFound(f"no override for {host}")
            out = override_dict(existing)
            session.delete(existing)
        return out

    # -- tokens -------------------------------------------------------------------------

    def create_token(self, role: str, name: str) -> tuple[int, str]:
        """A new token of `role`: (id, token). The token is not stored, only its hash."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        token = new_token()
        with self._tx() as session:
            row = Token(name=name, role=role, token_hash=hash_token(token))
            session.add(row)
            session.flush()
            return row.id, token

    def tokens(self) -> list[dict[str, Any]]:
        """Every token's id, name, role and dates (never the token)."""
        with self._tx() as session:
            return [
                {
                    "id": t.id,
                    "name": t.name,
                    "role": t.role,
                    "created_at": iso(t.created_at),
                    "revoked_at": iso(t.revoked_at),
                }
                for t in session.scalars(select(Token).order_by(Token.id))
            ]

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token (kept, marked revoked, for the record).

        Raises:
            NotFound: no such token.
        """
        with self._tx() as session:
            row = session.get(Token, token_id)
            if row is None:
                raise NotFound(f"no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()

    def authenticate(self, token: str) -> TokenInfo | None:
        """Who holds `token`, or None when it is unknown or revoked."""
        with self._tx() as session:
            row = session.scalars(
                select(Token).where(Token.token_hash == hash_token(token))
            ).first()
            if row is None or row.revoked_at is not None:
                return None
            return TokenInfo(id=row.id, name=row.name, role=row.role)

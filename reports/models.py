"""The report queue's tables (SQLAlchemy 2 declarative models).

The schema itself is created and changed only by the Alembic migrations in
`reports/migrations/`; these classes describe it for queries. A test checks that the
migrated schema and these models agree, so neither drifts from the other.

Times are stored as timezone-aware UTC. Reporter addresses are never stored whole: only
the /24 (IPv4) or /48 (IPv6) network they came from (`Report.reporter`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from reports.vocabulary import HOST_LEN, NAME_LEN, SOURCE_LEN, TARGET_LEN


def utcnow() -> datetime:
    """Now, timezone-aware UTC (every stored time is one)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of the report queue's tables."""


class Report(Base):
    """A report (a miss: "this should be blocked"), an appeal ("this should not be"), or a
    lead (a newly observed domain that earned attention: docs/leads.md).

    Duplicates of an open report (same `target` and `kind`) are merged into it: `count`
    goes up and `updated_at` moves. The partial unique index makes that merge safe when
    many submissions race (the loser of the insert merges instead).
    """

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    host: Mapped[str] = mapped_column(String(HOST_LEN), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    list_name: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    policy: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    count: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="open")
    reporter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # "public" (a report or appeal) or "observed" (a lead: docs/leads.md), whose reasons
    # (counts of client networks, never addresses, and signals) are `evidence`, as JSON.
    source: Mapped[str] = mapped_column(String(SOURCE_LEN), default="public")
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    decisions: Mapped[list[Decision]] = relationship(
        back_populates="report", order_by="Decision.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index(
            "ix_reports_open_target",
            "target",
            "kind",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_reports_status_count", "status", "count", "created_at"),
    )


class Decision(Base):
    """A reviewer's decision on a report: block (with a category), allow, or reject."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    report: Mapped[Report] = relationship(back_populates="decisions")


class Token(Base):
    """An API token. Only its SHA-256 is stored: a leaked database grants nothing."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Override(Base):
    """A local override: one host blocked or allowed above every list."""

    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(HOST_LEN), unique=True)
    action: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    decided_by: Mapped[str] = mapped_column(String(NAME_LEN))
    reason: Mapped[str] = mapped_column(Text)
    report_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

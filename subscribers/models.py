"""The subscribers' tables (SQLAlchemy Core). The Alembic migrations in
`subscribers/migrations/` create and change them; a test checks both agree.

- `subscribers`: id, policy name, own allow/block names (JSON arrays) and `lists_id`, the
  row of `subscriber_lists` holding the current own lists (None when there are none).
- `subscriber_addresses`: which subscriber holds an address now (one holder each), where
  it came from (`api`, or `radius` with the accounting session).
- `subscriber_changes`: the change log every node tails: one row per address whose mapping
  changed (its new policy and lists id, or no subscriber).
- `subscriber_lists`: own lists by id; a change makes a new row, so an id never changes
  meaning and the serving processes can memoise them.
- `subscriber_allowances`: daily allowance minutes used per day, subscriber and category
  (subscribers.allowances), shared by every node and worker.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

ID_LEN = 100
ADDRESS_LEN = 64
NAME_LEN = 100
MAX_OWN_NAMES = 100
ORIGINS = ("api", "radius")
# SQLite's autoincrement works only on INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
SEQ = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("policy", String(NAME_LEN), nullable=False),
    Column("allow_domains", Text, nullable=False),
    Column("block_domains", Text, nullable=False),
    Column("lists_id", Integer, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

subscriber_addresses = Table(
    "subscriber_addresses",
    metadata,
    Column("address", String(ADDRESS_LEN), primary_key=True),
    Column(
        "subscriber_id",
        String(ID_LEN),
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("origin", String(16), nullable=False),
    Column("session", String(200), nullable=True),
)

subscriber_changes = Table(
    "subscriber_changes",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("address", String(ADDRESS_LEN), nullable=False),
    Column("subscriber_id", String(ID_LEN), nullable=True),
    Column("policy", String(NAME_LEN), nullable=True),
    Column("lists_id", Integer, nullable=True),
)

subscriber_lists = Table(
    "subscriber_lists",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", String(ID_LEN), nullable=False),
    Column("allow_domains", Text, nullable=False),
    Column("block_domains", Text, nullable=False),
)

subscriber_allowances = Table(
    "subscriber_allowances",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("subscriber_id", String(ID_LEN), primary_key=True),
    Column("category", String(NAME_LEN), primary_key=True),
    Column("minute", Integer, primary_key=True),
)

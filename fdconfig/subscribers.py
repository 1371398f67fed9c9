"""`[subscribers]` and `[radius]`: per-subscriber policies fed by RADIUS accounting and the
provisioning API (docs/subscribers.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import (
    Address,
    IPNetwork,
    Table,
    Where,
    doc,
    fill,
    optional_address,
    parse_network,
)


class SubscribersTable(Table):
    """Subscribers: an id, a policy, own allow/block names and the addresses it holds now
    (IPv4 /32s, IPv6 /48../64 prefixes). A query from a subscriber's address gets its
    policy (after device identities, before `[policies.*] clients`)."""

    enabled: Annotated[bool, doc("Serve subscribers' policies (needs `[policies]`).")] = False
    database: Annotated[
        str,
        doc(
            'An SQLAlchemy URL. `""`: SQLite (WAL) at `<data_dir>/subscribers.db`. '
            '`"postgresql://user:password@host/db"` (psycopg 3) shares the subscribers, their '
            "changes (LISTEN/NOTIFY) and their daily allowances between resolver nodes."
        ),
    ] = ""
    table_path: Annotated[
        str,
        doc(
            "The serving table every worker maps (a memory-mapped file; `/dev/shm/...` keeps "
            "it off the disk).",
            default_text="`<data_dir>/subscribers.table`",
        ),
    ] = ""
    poll_interval: Annotated[
        float,
        doc(
            "Seconds between looks at the database's change log for changes made elsewhere "
            "(another node, the CLI). With PostgreSQL a NOTIFY wakes the node at once; this "
            "is the fallback.",
            gt=0,
            le=60.0,
        ),
    ] = 0.5


class RadiusTable(Table):
    """RADIUS accounting (RFC 2866) from the access gateways: Start and Interim-Update map a
    subscriber's Framed-IP-Address / Framed-IPv6-Prefix / Delegated-IPv6-Prefix, Stop unmaps
    them."""

    listen: Annotated[
        str, doc('The UDP listener, like `"127.0.0.1:1813"`. `""`: no RADIUS listener.')
    ] = ""
    secret: Annotated[str, doc("The shared secret of the NAS clients.")] = ""
    clients: Annotated[
        tuple[str, ...],
        doc("The NAS networks (CIDRs) heard; packets from elsewhere are dropped and counted."),
    ] = ()
    subscriber_attribute: Annotated[
        str,
        doc(
            "Where the subscriber id is: `User-Name`, `Class`, or another attribute of the "
            "RFC 2865/2866 dictionary by name (like `Calling-Station-Id`)."
        ),
    ] = "User-Name"


@dataclass(frozen=True)
class SubscribersConfig:
    """`[subscribers]` (docs/subscribers.md). `database` "" means SQLite in data_dir;
    `table_path` "" means `<data_dir>/subscribers.table`."""

    enabled: bool = False
    database: str = ""
    table_path: str = ""
    poll_interval: float = 0.5


@dataclass(frozen=True)
class RadiusConfig:
    """`[radius]`: the accounting listener (None: off), its secret and NAS networks."""

    listen: Address | None = None
    secret: str = ""
    clients: tuple[IPNetwork, ...] = ()
    subscriber_attribute: str = "User-Name"


def build(table: SubscribersTable, where: Where) -> SubscribersConfig:
    database = table.database.strip()
    if database and "://" not in database:
        raise where.error(
            "subscribers.database",
            f'"{database}" is not a database URL (like "postgresql://user@host/db"); '
            '"" means SQLite in data_dir',
        )
    path = table.table_path.strip()
    return fill(
        SubscribersConfig,
        table,
        database=database,
        table_path=str(where.data_dir / path) if path else "",
    )


def build_radius(table: RadiusTable, where: Where, subscribers: SubscribersConfig) -> RadiusConfig:
    listen = where.one("radius.listen", table.listen, optional_address)
    if listen is not None:
        if not subscribers.enabled:
            raise where.error("radius.listen", "a RADIUS listener needs [subscribers] enabled")
        if not table.secret:
            raise where.error("radius.secret", "a RADIUS listener needs the shared secret")
        if not table.clients:
            raise where.error("radius.clients", "name the NAS networks (CIDRs) to hear")
    if not table.subscriber_attribute.strip():
        raise where.error("radius.subscriber_attribute", "must name an attribute")
    return fill(
        RadiusConfig,
        table,
        listen=listen,
        clients=where.each("radius.clients", table.clients, parse_network),
        subscriber_attribute=table.subscriber_attribute.strip(),
    )

"""`[reports]`: public reports and appeals (docs/reports-api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.access import DEFAULT_ALLOW, DEFAULT_ALLOW_TEXT
from fdconfig.admin import AdminConfig
from fdconfig.fields import IPNetwork, Table, Where, doc, fill, http_url, parse_network


class ReportsTable(Table):
    """Public reports and appeals. Reporter addresses are stored only as their /24 (IPv4) or
    /48 (IPv6) network."""

    database: Annotated[
        str,
        doc(
            'An SQLAlchemy URL of the report queue. `""`: SQLite (WAL) at '
            '`<data_dir>/reports.db`. `"postgresql://user:password@host/db"` (psycopg 3) lets '
            "several resolver nodes share one queue; the same migrations create the schema at "
            "start-up."
        ),
    ] = ""
    allow: Annotated[
        tuple[str, ...],
        doc(
            "Networks that may submit reports (others get 403).",
            default_text="the `[access]` default (loopback and private ranges)",
        ),
    ] = DEFAULT_ALLOW_TEXT
    rate_per_minute: Annotated[
        float,
        doc(
            "Reports a client network (its /24 or /48) may send per minute, after a `burst`; "
            "more get 429 with `Retry-After`.",
            gt=0,
            le=60_000.0,
        ),
    ] = 6.0
    burst: Annotated[int, doc("Reports a client network may send at once.", ge=1, le=100_000)] = 10
    form_url: Annotated[
        str,
        doc(
            'Where the block page\'s "ask for a review" form posts (an http(s) URL).',
            default_text="`http://<admin.listen>/api/reports`",
        ),
    ] = ""
    page_url: Annotated[
        str,
        doc(
            "The public report form (it takes `?target=&kind=appeal&category=&list=` to pre-fill).",
            default_text="`http://<admin.listen>/report`",
        ),
    ] = ""
    trusted_proxies: Annotated[
        tuple[str, ...],
        doc(
            "Reverse proxies (CIDRs) in front of the admin listener: for a request from one of "
            "them the client is the right-most `X-Forwarded-For` address that is not a trusted "
            "proxy. Without this, everyone behind a proxy shares its rate limit."
        ),
    ] = ()


@dataclass(frozen=True)
class ReportsConfig:
    """Public reports and appeals (docs/reports-api.md).

    `database` is an SQLAlchemy URL; "" means SQLite at `<data_dir>/reports.db`.
    `form_url`/`page_url` are where the block page's form posts and links; they default to
    the admin listener's `/api/reports` and `/report` once the config is loaded.
    """

    database: str = ""
    allow: tuple[IPNetwork, ...] = DEFAULT_ALLOW
    rate_per_minute: float = 6.0
    burst: int = 10
    form_url: str = ""
    page_url: str = ""
    trusted_proxies: tuple[IPNetwork, ...] = ()


def build(table: ReportsTable, where: Where, admin: AdminConfig) -> ReportsConfig:
    database = table.database.strip()
    if database and "://" not in database:
        raise where.error(
            "reports.database",
            f'"{database}" is not a database URL (like "postgresql://user@host/db"); '
            '"" means SQLite in data_dir',
        )
    form_url = table.form_url.strip() or f"http://{admin.listen}/api/reports"
    page_url = table.page_url.strip() or f"http://{admin.listen}/report"
    return fill(
        ReportsConfig,
        table,
        database=database,
        allow=where.each("reports.allow", table.allow, parse_network),
        form_url=where.one("reports.form_url", form_url, http_url),
        page_url=where.one("reports.page_url", page_url, http_url),
        trusted_proxies=where.each("reports.trusted_proxies", table.trusted_proxies, parse_network),
    )

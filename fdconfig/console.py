"""`[console]`: the admin listener's console (`reports/console.py`): its query-log store and
overview statistics, both fed by the query log's writer thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import Table, Where, doc, fill
from fdconfig.querylog import QueryLogConfig


class ConsoleTable(Table):
    """The console's query-log store and overview numbers (pages on the admin listener)."""

    enabled: Annotated[
        bool,
        doc(
            "Keep the console's overview numbers and searchable query log. Needs "
            "`[querylog] enabled = true`: their rows are made from its entries by a writer "
            "process, with its anonymisation; the serving process only hands them over "
            "(rows the writer cannot take in time are dropped and counted, never waited for)."
        ),
    ] = False
    store: Annotated[
        bool,
        doc("Keep every query as a searchable row (SQLite, one file per day); off: numbers only."),
    ] = True
    store_dir: Annotated[
        str,
        doc("The store's folder, relative to `data_dir` (or the config's folder).", min_length=1),
    ] = "querylog.d"
    retention_days: Annotated[
        int, doc("Day files older than this many days are deleted.", ge=1, le=3660)
    ] = 7
    max_rows: Annotated[
        int,
        doc("The oldest day files are deleted while the store holds more rows.", ge=1000),
    ] = 10_000_000
    max_bytes: Annotated[
        int,
        doc("The oldest day files are deleted while the store takes more bytes.", ge=1 << 20),
    ] = 4 * 1024**3


@dataclass(frozen=True)
class ConsoleConfig:
    """The console's store and statistics. `store_dir` is absolute once loaded."""

    enabled: bool = False
    store: bool = True
    store_dir: str = "querylog.d"
    retention_days: int = 7
    max_rows: int = 10_000_000
    max_bytes: int = 4 * 1024**3


def build(table: ConsoleTable, where: Where, querylog: QueryLogConfig) -> ConsoleConfig:
    if table.enabled and not querylog.enabled:
        raise where.error(
            "console.enabled", "needs [querylog] enabled = true (the console reads its rows)"
        )
    return fill(ConsoleConfig, table, store_dir=str(where.data_dir / table.store_dir))

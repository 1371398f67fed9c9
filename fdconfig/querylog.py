"""`[querylog]`: the optional JSON-lines query log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fdconfig.fields import Table, Where, doc, fill

Anonymize = Literal["truncate", "hash", "none"]
ANONYMIZE_MODES: tuple[str, ...] = get_args(Anonymize)


class QueryLogTable(Table):
    """The JSON-lines query log, one line per answered query."""

    enabled: Annotated[
        bool, doc("Write one JSON line per answered query. Off unless turned on here.")
    ] = False
    path: Annotated[
        str,
        doc("The log file, relative to `data_dir` (or the config's folder).", min_length=1),
    ] = "query.log"
    anonymize: Annotated[
        Anonymize,
        doc(
            'Client addresses as logged: `"truncate"` (the /24 or /48 network), `"hash"` (a '
            "keyed hash, SipHash-2-4, 16 hex digits; the key is random each start, so a "
            'client can be followed within one run only), `"none"` (the full address).'
        ),
    ] = "truncate"
    max_bytes: Annotated[
        int,
        doc(
            "When the file would grow past this (at least 4096), it becomes `PATH.1` "
            "(replacing the previous backup) and a new file starts: at most about twice this "
            "on disk.",
            ge=4096,
        ),
    ] = 100 * 1024 * 1024


@dataclass(frozen=True)
class QueryLogConfig:
    """The optional JSON-lines query log. `path` is absolute once loaded."""

    enabled: bool = False
    path: str = "query.log"
    anonymize: str = "truncate"
    max_bytes: int = 100 * 1024 * 1024


def build(table: QueryLogTable, where: Where) -> QueryLogConfig:
    if not table.path.strip():
        raise where.error("querylog.path", "must not be empty")
    return fill(QueryLogConfig, table, path=str(where.data_dir / table.path))

"""`[logging]`: the process's own diagnostic log (stderr)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fdconfig.fields import Table, Where, doc, fill

Level = Literal["debug", "info", "warning", "error"]
Format = Literal["text", "json"]
LOG_LEVELS: tuple[str, ...] = get_args(Level)
LOG_FORMATS: tuple[str, ...] = get_args(Format)


class LoggingTable(Table):
    """The process's own diagnostic log, on stderr."""

    level: Annotated[Level, doc('`"debug"`, `"info"`, `"warning"` or `"error"`.')] = "info"
    format: Annotated[Format, doc('`"text"` or `"json"` (one object a line), on stderr.')] = "text"


@dataclass(frozen=True)
class LoggingConfig:
    """The process's own diagnostic log (stderr)."""

    level: str = "info"
    format: str = "text"


def build(table: LoggingTable, where: Where) -> LoggingConfig:
    return fill(LoggingConfig, table)

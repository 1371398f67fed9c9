"""`[observed]`: newly observed domains (docs/leads.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import Table, Where, doc, fill, parse_duration


class ObservedTable(Table):
    """Newly observed domains: the registrable domain (Public Suffix List) of every cache miss
    is looked up in a fixed-size pair of Bloom filters; one not seen within `window` is newly
    observed: counted, logged and held as a candidate lead (`[leads]`)."""

    enabled: Annotated[bool, doc("Track newly observed domains (cache misses only).")] = False
    memory: Annotated[
        int,
        doc(
            "Bytes of the two Bloom filters together (fixed: never grows). Per worker.",
            ge=4096,
            le=1 << 32,
        ),
    ] = 4 << 20
    false_positive_rate: Annotated[
        float,
        doc(
            "The false-positive rate each filter is sized for: the share of really new domains "
            "taken for already seen. It sets how many domains a filter holds before it rotates.",
            gt=0,
            lt=0.5,
        ),
    ] = 0.001
    window: Annotated[
        float | str,
        doc(
            "How long a domain stays known: seconds or a duration (`\"1d\"`). A domain is "
            "forgotten between `window`/2 and `window` after it was last seen (earlier when "
            "more distinct domains arrive than the filters hold at `false_positive_rate`)."
        ),
    ] = "1d"


@dataclass(frozen=True)
class ObservedConfig:
    """Newly observed domains (docs/leads.md); `window` in seconds."""

    enabled: bool = False
    memory: int = 4 << 20
    false_positive_rate: float = 0.001
    window: float = 86_400.0


def build(table: ObservedTable, where: Where) -> ObservedConfig:
    seconds = where.one("observed.window", table.window, parse_duration)  # type: ignore[arg-type]
    return fill(ObservedConfig, table, window=seconds)

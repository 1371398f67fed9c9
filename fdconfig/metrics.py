"""`[metrics]`: the Prometheus listener."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import Address, Table, Where, doc, optional_address


class MetricsTable(Table):
    """The Prometheus listener. Metric names start with `filterdns_`; label values never
    include query names or client addresses."""

    listen: Annotated[
        str, doc('Where Prometheus scrapes `/metrics`. `""` disables the listener.')
    ] = "127.0.0.1:9153"


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus listener; `listen` is None when disabled."""

    listen: Address | None = Address("127.0.0.1", 9153)

    @property
    def enabled(self) -> bool:
        return self.listen is not None


def build(table: MetricsTable, where: Where) -> MetricsConfig:
    return MetricsConfig(listen=where.one("metrics.listen", table.listen, optional_address))

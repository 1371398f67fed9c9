"""`[admin]`: the admin API and review page (`reports/`, docs/reports-api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import Address, Table, Where, doc, fill, parse_address


class AdminTable(Table):
    """The admin API and review page, served inside `filterdns serve`'s event loop."""

    enabled: Annotated[
        bool,
        doc(
            "Run the admin API. Every route but report submission and the public pages needs "
            "a token (`filterdns admin token create`)."
        ),
    ] = False
    listen: Annotated[
        str,
        doc(
            "Its address. Keep it on loopback or a management network; publish "
            "`/api/reports` and `/report` through a reverse proxy if the public must reach "
            "them."
        ),
    ] = "127.0.0.1:8081"


@dataclass(frozen=True)
class AdminConfig:
    """The admin API listener (`reports/`, docs/reports-api.md): off unless enabled, and
    loopback by default, because it can change what is blocked."""

    enabled: bool = False
    listen: Address = Address("127.0.0.1", 8081)


def build(table: AdminTable, where: Where) -> AdminConfig:
    return fill(AdminConfig, table, listen=where.one("admin.listen", table.listen, parse_address))

"""`[blockpage]`: the HTTP server that explains blocks (ip mode points names at it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fdconfig.fields import (
    Address,
    Table,
    Where,
    doc,
    fill,
    http_url,
    optional_address,
    parse_address,
)


class BlockPageTable(Table):
    """The block page: an HTTP server explaining why a name is blocked (docs/policies.md)."""

    enabled: Annotated[bool, doc('Serve the block page (use with `blocking.mode = "ip"`).')] = False
    listen: Annotated[str, doc("HTTP address of the block page.")] = "127.0.0.1:8080"
    https_listen: Annotated[
        str,
        doc(
            "Accept and cleanly close HTTPS there (no certificate can be trusted). Empty: no "
            "HTTPS listener."
        ),
    ] = ""
    review_url: Annotated[
        str, doc('Where "ask for a review" links (with host, category, list, policy).')
    ] = ""


@dataclass(frozen=True)
class BlockPageConfig:
    """The `[blockpage]` HTTP server that explains blocks (ip mode points names at it)."""

    enabled: bool = False
    listen: Address = Address("127.0.0.1", 8080)
    https_listen: Address | None = None
    review_url: str = ""


def build(table: BlockPageTable, where: Where) -> BlockPageConfig:
    review_url = table.review_url.strip()
    return fill(
        BlockPageConfig,
        table,
        listen=where.one("blockpage.listen", table.listen, parse_address),
        https_listen=where.one("blockpage.https_listen", table.https_listen, optional_address),
        review_url=where.one("blockpage.review_url", review_url, http_url) if review_url else "",
    )

"""`[blocking]`: how a blocked name is answered."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fdconfig.fields import ConfigError, Table, Where, doc, fill, ip_of_version

BlockMode = Literal["nxdomain", "nodata", "null", "ip"]
BLOCK_MODES: tuple[str, ...] = get_args(BlockMode)
MAX_TTL = 2**31 - 1

MODE_DOC = (
    'How a blocked name is answered: `"nxdomain"` (NXDOMAIN with an SOA, so clients cache the '
    'block), `"nodata"` (NOERROR, no records), `"null"` (A 0.0.0.0 / AAAA ::), `"ip"` (A '
    "`ipv4` / AAAA `ipv6`, e.g. a block page). Other qtypes of a blocked name get NXDOMAIN in "
    "`nxdomain` mode and NODATA otherwise."
)


class BlockingTable(Table):
    """How a blocked name is answered. Every block carries an Extended DNS Error (RFC 8914)
    whose text names the category and the list, so `dig` shows why a name is blocked."""

    mode: Annotated[BlockMode, doc(MODE_DOC)] = "nxdomain"
    ipv4: Annotated[str, doc("The IPv4 address `ip` mode answers A queries with.")] = ""
    ipv6: Annotated[
        str,
        doc(
            "The IPv6 address `ip` mode answers AAAA queries with. `ip` mode needs at least one "
            "of the two, and not 0.0.0.0 / :: (use `null` for that); a family without an "
            "address gets NODATA."
        ),
    ] = ""
    ttl: Annotated[
        int,
        doc(
            "TTL of block answers (and of the SOA's minimum in `nxdomain` mode).",
            ge=0,
            le=MAX_TTL,
        ),
    ] = 300
    inspect_answers: Annotated[
        bool,
        doc(
            "Block an upstream answer whose CNAME targets or A/AAAA addresses are listed "
            "(CNAME cloaking, IP entries), as if the query name were listed."
        ),
    ] = True
    filtered_categories: Annotated[
        tuple[str, ...],
        doc(
            "Categories reported with Extended DNS Error 17 (Filtered: a policy choice) "
            "instead of 15 (Blocked)."
        ),
    ] = ()


@dataclass(frozen=True)
class BlockingConfig:
    """How a blocked name is answered.

    `ipv4`/`ipv6` are the addresses `ip` mode answers with ("" = none for that family, which
    then gets NODATA); `null` mode always answers 0.0.0.0 / ::. `filtered_categories` are
    reported with EDE 17 (Filtered, a policy choice) instead of 15 (Blocked).
    """

    mode: str = "nxdomain"
    ipv4: str = ""
    ipv6: str = ""
    ttl: int = 300
    inspect_answers: bool = True
    filtered_categories: tuple[str, ...] = ()


def build(table: BlockingTable, where: Where) -> BlockingConfig:
    cfg = fill(
        BlockingConfig,
        table,
        ipv4=where.one("blocking.ipv4", table.ipv4, ip_of_version(4)),
        ipv6=where.one("blocking.ipv6", table.ipv6, ip_of_version(6)),
    )
    check_ip_mode(cfg, where.file, "blocking.mode")
    return cfg


def check_ip_mode(cfg: BlockingConfig, file: str, key: str) -> None:
    """`ip` mode answers with a configured address, so it needs a usable one."""
    if cfg.mode != "ip":
        return
    usable = [a for a in (cfg.ipv4, cfg.ipv6) if a and not ipaddress.ip_address(a).is_unspecified]
    if not usable:
        raise ConfigError(
            file,
            key,
            '"ip" needs blocking.ipv4 and/or blocking.ipv6 set to a block-page address '
            '(not 0.0.0.0 or ::; use mode "null" for those)',
        )

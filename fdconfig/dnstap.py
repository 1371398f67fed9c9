"""`[dnstap]`: a copy of every query and answer, as dnstap, for the operator's log pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fdconfig.fields import Address, Table, Where, doc, fill, optional_address

Message = Literal["client_query", "client_response", "forwarder_query", "forwarder_response"]
MESSAGES: tuple[str, ...] = get_args(Message)


class DnstapTable(Table):
    """dnstap (protobuf `dnstap.Dnstap` over Frame Streams, bidirectional) to a collector
    on a Unix socket or TCP: the format Unbound, BIND, Knot and dnsdist emit. Off unless
    `socket` or `address` is set. See docs/dnstap.md."""

    socket: Annotated[
        str,
        doc(
            "The collector's Unix socket, relative to `data_dir` (or the config's folder). "
            "Either this or `address`."
        ),
    ] = ""
    address: Annotated[str, doc("The collector's `ADDR:PORT` (TCP). Either this or `socket`.")] = ""
    identity: Annotated[
        str, doc('The `identity` of every message (e.g. the host name); `""`: none.')
    ] = ""
    version: Annotated[str, doc('The `version` of every message; `""`: none.')] = "filterdns"
    messages: Annotated[
        tuple[Message, ...],
        doc(
            "Which messages to send. `forwarder_query`/`forwarder_response`: the upstream "
            "exchanges, written in C for the queries the C fast path forwards."
        ),
    ] = ("client_query", "client_response")
    anonymize: Annotated[
        bool,
        doc(
            "Anonymise the client address as `[querylog] anonymize` says (truncate to the "
            "/24 or /48, or a keyed hash); `false` sends the full address."
        ),
    ] = True
    queue_size: Annotated[
        int,
        doc(
            "Messages held while the collector is slow or away; beyond, messages are "
            "dropped and counted (`filterdns_dnstap_dropped_total`), never waited for.",
            ge=1,
        ),
    ] = 100_000


@dataclass(frozen=True)
class DnstapConfig:
    """dnstap output; `enabled` when a socket or an address is set. `socket` is absolute
    once loaded."""

    socket: str = ""
    address: Address | None = None
    identity: str = ""
    version: str = "filterdns"
    messages: tuple[str, ...] = ("client_query", "client_response")
    anonymize: bool = True
    queue_size: int = 100_000

    @property
    def enabled(self) -> bool:
        return bool(self.socket) or self.address is not None


def build(table: DnstapTable, where: Where) -> DnstapConfig:
    address = where.one("dnstap.address", table.address, optional_address)
    if table.socket and address is not None:
        raise where.error("dnstap.socket", "set either socket or address, not both")
    if len(set(table.messages)) != len(table.messages):
        raise where.error("dnstap.messages", "a message type is listed twice")
    return fill(
        DnstapConfig,
        table,
        socket=str(where.data_dir / table.socket) if table.socket else "",
        address=address,
    )

"""`[tls]`: the certificate and the limits of the encrypted listeners (DoT, DoH, DoQ;
docs/encrypted-dns.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fdconfig.fields import Table, Where, doc, fill, parse_duration

CLIENT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
SELF_SIGNED_DIR = "tls"
"""Where, below the data directory, the self-signed certificate is generated."""


class TlsTable(Table):
    """The certificate and limits shared by the DoT, DoH and DoQ listeners
    (`server.listen_tls`, `listen_https`, `listen_quic`). The whole section applies on
    SIGHUP to new connections and handshakes (cert and key are re-read then, and when the
    files change on disk); open connections keep what they started with."""

    cert: Annotated[
        str,
        doc(
            "PEM certificate chain (e.g. certbot's `fullchain.pem`), relative to the config "
            "file's folder. Empty (with `key` empty): a self-signed certificate for "
            "`server_name` is generated once into `data_dir/tls/` and its SHA-256 "
            "fingerprint logged (for a first try; clients must be told to trust it)."
        ),
    ] = ""
    key: Annotated[
        str,
        doc("PEM private key of `cert` (e.g. certbot's `privkey.pem`); required with `cert`."),
    ] = ""
    server_name: Annotated[
        str,
        doc(
            "The name clients connect to (e.g. `dns.example.org`). A TLS server name one "
            "label below it gives the ClientID (`kid1.dns.example.org`: `kid1`); no server "
            "name (a client that connects by address) or `server_name` itself gives none; "
            "a handshake for any other name is refused (`unrecognized_name`). Empty: every "
            "server name is accepted and none gives a ClientID."
        ),
    ] = ""
    max_connections: Annotated[
        int,
        doc(
            "Open connections per listener; beyond, new connections are closed at once "
            "(and counted).",
            ge=1,
        ),
    ] = 10_000
    idle_timeout: Annotated[
        float,
        doc(
            "Seconds a connection may go without delivering a whole query (a client "
            "trickling bytes counts as idle) before it is closed.",
            gt=0,
        ),
    ] = 30.0
    handshake_timeout: Annotated[
        float, doc("Seconds allowed for the TLS handshake.", gt=0)
    ] = 5.0
    max_inflight: Annotated[
        int,
        doc(
            "Queries of one connection being answered at once; further queries wait "
            "(the connection is not read meanwhile).",
            ge=1,
        ),
    ] = 100
    max_streams: Annotated[
        int,
        doc(
            "Concurrent streams per HTTP/2 connection (`SETTINGS_MAX_CONCURRENT_STREAMS`); "
            "streams beyond it are reset (`REFUSED_STREAM`).",
            ge=1,
        ),
    ] = 100
    ticket_rotation: Annotated[
        float | str,
        doc(
            "How often the TLS session ticket keys are replaced: seconds or `\"12h\"`. "
            "A ticket older than that gets a full handshake."
        ),
    ] = "12h"
    padding: Annotated[
        bool,
        doc(
            "Pad encrypted answers to a query with EDNS to a multiple of 468 bytes "
            "(RFC 7830, the block-length policy of RFC 8467)."
        ),
    ] = True


@dataclass(frozen=True)
class TlsConfig:
    """The encrypted listeners' certificate and limits. `cert` and `key` are absolute paths,
    both "" for the self-signed certificate in `self_signed_dir`."""

    cert: str = ""
    key: str = ""
    server_name: str = ""
    max_connections: int = 10_000
    idle_timeout: float = 30.0
    handshake_timeout: float = 5.0
    max_inflight: int = 100
    max_streams: int = 100
    ticket_rotation: float = 12 * 3600.0
    padding: bool = True
    self_signed_dir: str = ""

    @property
    def self_signed(self) -> bool:
        return not self.cert


def parse_server_name(text: str) -> str:
    """A host name, lower case, without the trailing dot."""
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or not all(
        0 < len(label) <= 63 and set(label) <= CLIENT_ID_CHARS and label[0] != "-" != label[-1]
        for label in labels
    ):
        raise ValueError(f'"{text}" is not a host name (like dns.example.org)')
    return name


def parse_client_id(text: str) -> str:
    """A ClientID: one DNS label, lower case (a TLS server name's case does not count)."""
    value = text.strip().lower()
    if not 0 < len(value) <= 63 or not set(value) <= CLIENT_ID_CHARS:
        raise ValueError(
            f'"{text}" is not a ClientID (1 to 63 characters a-z, 0-9 and -: one DNS label)'
        )
    return value


def resolve_pem(where: Where, key: str, text: str) -> str:
    """A PEM path relative to the config file's folder, which must be a file."""
    path = (where.base / Path(text).expanduser()).resolve()
    if not path.is_file():
        raise where.error(key, f"{path} is not a file")
    return str(path)


def build(table: TlsTable, where: Where) -> TlsConfig:
    if bool(table.cert) != bool(table.key):
        missing = "tls.key" if table.cert else "tls.cert"
        raise where.error(
            missing, "tls.cert and tls.key go together (both, or neither for self-signed)"
        )
    cert = resolve_pem(where, "tls.cert", table.cert) if table.cert else ""
    key = resolve_pem(where, "tls.key", table.key) if table.key else ""
    server_name = (
        where.one("tls.server_name", table.server_name, parse_server_name)
        if table.server_name
        else ""
    )
    rotation = where.one("tls.ticket_rotation", table.ticket_rotation, parse_duration)  # type: ignore[arg-type]
    return fill(
        TlsConfig,
        table,
        cert=cert,
        key=key,
        server_name=server_name,
        ticket_rotation=rotation,
        self_signed_dir=str(where.data_dir / SELF_SIGNED_DIR),
    )

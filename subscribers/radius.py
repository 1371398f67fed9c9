"""RADIUS accounting (RFC 2866) from the access gateways: who holds which address now.

Start and Interim-Update give the session's addresses (Framed-IP-Address,
Framed-IPv6-Prefix, Delegated-IPv6-Prefix) to the subscriber named by the configured
attribute; Stop takes them back. Only configured NAS networks are heard, the shared secret
is checked through the Request Authenticator, and every valid request is answered with an
Accounting-Response once its change is stored. Anything else is dropped and counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pyrad import packet
from pyrad.dictionary import Dictionary

from subscribers.addresses import canonical
from subscribers.runtime import AUDIT_KIND

log = logging.getLogger(__name__)

DICTIONARY = Path(__file__).resolve().parent / "radius.dictionary"
ADDRESS_ATTRIBUTES = ("Framed-IP-Address", "Framed-IPv6-Prefix", "Delegated-IPv6-Prefix")
STATUSES = ("Start", "Stop", "Interim-Update", "Accounting-On", "Accounting-Off")
DROP_REASONS = ("unknown_nas", "malformed", "bad_authenticator")
BATCH = 500  # requests stored per transaction


class RadiusAccounting(asyncio.DatagramProtocol):
    """The listener. `requests` counts valid requests by status type, `dropped` the rest by
    reason (no per-client labels)."""

    def __init__(self, config: Any, subscribers: Any) -> None:
        self.secret = config.secret.encode()
        self.clients = config.clients
        self.attribute = config.subscriber_attribute
        self.subscribers = subscribers
        self.dictionary = Dictionary(str(DICTIONARY))
        self.requests: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.unknown_subscribers = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[tuple[Any, ...]] = []  # requests waiting for the next commit
        self._writer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is None or not any(ip.version == n.version and ip in n for n in self.clients):
            self.dropped["unknown_nas"] += 1
            return
        try:
            pkt = packet.AcctPacket(packet=data, secret=self.secret, dict=self.dictionary)
            if pkt.code != packet.AccountingRequest:
                raise packet.PacketError("not an Accounting-Request")
        except Exception:  # pyrad raises several kinds on garbage: all are "malformed"
            self.dropped["malformed"] += 1
            return
        if not pkt.VerifyAcctRequest():
            self.dropped["bad_authenticator"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._handle(pkt, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, pkt: packet.AcctPacket, addr: tuple[str, int]) -> None:
        try:
            status, subscriber, session, addresses = self._read(pkt)
        except (KeyError, ValueError, UnicodeDecodeError, IndexError) as exc:
            log.debug("RADIUS request from %s unreadable: %s", addr[0], exc)
            self.dropped["malformed"] += 1
            return
        self.requests[status] += 1
        if status in ("Start", "Interim-Update", "Stop") and subscriber:
            self._pending.append(
                (subscriber, session, addresses, status == "Stop", status, pkt, addr)
            )
            if self._writer is None or self._writer.done():
                self._writer = asyncio.get_running_loop().create_task(self._write())
            return
        self._reply(pkt, addr)

    async def _write(self) -> None:
        """Store what arrived meanwhile in one transaction (one commit per burst, not per
        packet), then answer each: only a stored change is acknowledged."""
        while self._pending:
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            store = self.subscribers.store
            try:
                changes = await asyncio.to_thread(store.sessions, [b[:4] for b in batch])
            except Exception as exc:
                # Not stored: no answers, so the NAS sends them again.
                log.warning("RADIUS: %d requests not stored: %s", len(batch), exc)
                continue
            self.unknown_subscribers += changes.count(None)
            self.subscribers.service.kick()
            for *_update, _status, pkt, addr in batch:
                self._reply(pkt, addr)
            records = [
                {
                    "kind": AUDIT_KIND,
                    "action": "radius",
                    "status": status,
                    "id": sid,
                    "session": session,
                    "added": change.added,
                    "removed": change.removed,
                    "by": f"radius:{addr[0]}",
                }
                for (sid, session, _addresses, _stop, status, _pkt, addr), change in zip(
                    batch, changes, strict=True
                )
                if change is not None and (change.added or change.removed)
            ]
            if records:
                # One write and one fsync for the burst, after the answers: the change is
                # stored already, and a full disk must not hold the gateways up.
                try:
                    await asyncio.to_thread(self.subscribers.audit.append_many, records)
                except OSError as exc:
                    log.error("RADIUS: %d changes not audited: %s", len(records), exc)

    def _reply(self, pkt: packet.AcctPacket, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(pkt.CreateReply().ReplyPacket(), addr)

    def _read(self, pkt: packet.AcctPacket) -> tuple[str, str, str, list[str]]:
        status = pkt["Acct-Status-Type"][0]
        if isinstance(status, int):  # a value the dictionary does not name
            status = str(status)
        raw = pkt.get(self.attribute) or []
        subscriber = raw[0] if raw else ""
        if isinstance(subscriber, bytes):  # Class is octets
            subscriber = subscriber.decode("utf-8")
        session = (pkt.get("Acct-Session-Id") or [""])[0]
        addresses = []
        for name in ADDRESS_ATTRIBUTES:
            for value in pkt.get(name) or []:
                try:
                    addresses.append(canonical(str(value)))
                except ValueError:
                    log.debug("RADIUS %s %s ignored (not a /32 or a /48../64)", name, value)
        return status, str(subscriber), str(session), addresses


async def start_radius(
    config: Any, subscribers: Any
) -> tuple[asyncio.DatagramTransport, RadiusAccounting]:
    """Listen on `config.listen` (a `RadiusConfig`)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: RadiusAccounting(config, subscribers),
        local_addr=(config.listen.host, config.listen.port),
    )
    return transport, protocol

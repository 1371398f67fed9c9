"""Unit tests for dns_resolver.upstreams.upstream_tls against a DoT server in the test's event loop
whose faults the test chooses: answers held back and sent in reverse order, connections
closed on a chosen query, idle connections watched for the client's close."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from benchmarks.load.servers import make_tls_certificate
from dns_resolver import wire
from dns_resolver.upstreams.upstream import Forwarder
from dns_resolver.upstreams.upstream_tls import PIPELINE_DEPTH, TlsUpstream
from fdconfig.fields import Address
from fdconfig.upstream import DotServer
from tests.dns_resolver.upstreams.test_upstream import Events, client_query

NAME = "dot.filterdns.test"


class TlsEvents(Events):
    def __init__(self) -> None:
        super().__init__()
        self.connections: list[tuple[str, str]] = []

    def upstream_connected(self, upstream: str, transport: str) -> None:
        self.connections.append((upstream, transport))


class DotServerFault:
    """A DoT server on loopback answering every A query with 192.0.2.1.

    `hold`: keep answers until this many queries arrived (over all connections), then send
    them in reverse order. `close_on`: close a connection, unanswered, when its Nth query
    arrives. `closed_by_client` counts connections the client closed.
    """

    def __init__(self, hold: int = 1, close_on: int | None = None) -> None:
        self.hold = hold
        self.close_on = close_on
        self.connections = 0
        self.closed_by_client = 0
        self.client_closed = asyncio.Event()
        self._held: list[tuple[asyncio.StreamWriter, bytes]] = []

    async def start(self, cert: Path, key: Path) -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        seen = 0
        try:
            while True:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                message = dns.message.from_wire(await reader.readexactly(length))
                seen += 1
                if seen == self.close_on:
                    writer.close()
                    return
                reply = dns.message.make_response(message)
                reply.answer.append(
                    dns.rrset.from_text(message.question[0].name, 60, "IN", "A", "192.0.2.1")
                )
                data = reply.to_wire()
                self._held.append((writer, struct.pack("!H", len(data)) + data))
                if len(self._held) >= self.hold:
                    for out, answer in reversed(self._held):
                        out.write(answer)
                    self._held.clear()
        except asyncio.IncompleteReadError:
            self.closed_by_client += 1
            self.client_closed.set()
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls_certificate(tmp_path_factory.mktemp("tls"), NAME)


def run_against(
    fault: DotServerFault,
    certificate: tuple[Path, Path, Path],
    body: Callable[[Forwarder], Awaitable[None]],
    events: TlsEvents,
    idle_timeout: float = 30.0,
) -> None:
    ca_file, cert, key = certificate

    async def main() -> None:
        port = await fault.start(cert, key)
        upstream = TlsUpstream(
            DotServer(Address("127.0.0.1", port), NAME), str(ca_file), idle_timeout
        )
        fwd = Forwarder([upstream], timeout=3.0, observer=events)
        try:
            await body(fwd)
        finally:
            await fwd.close()
            await fault.stop()

    asyncio.run(main())


@pytest.fixture
def events() -> TlsEvents:
    return TlsEvents()


def a_records(answer: bytes | None) -> list[str]:
    assert answer is not None
    msg = dns.message.from_wire(answer)
    return [r.to_text() for rrset in msg.answer for r in rrset]


def test_pipelined_queries_answered_in_reverse_order_each_get_their_own(
    certificate: tuple[Path, Path, Path], events: TlsEvents
) -> None:
    fault = DotServerFault(hold=20)  # no answer before all 20 queries are in

    async def body(fwd: Forwarder) -> None:
        names = [f"q{i}.filterdns.test" for i in range(20)]
        answers = await asyncio.gather(*(fwd.resolve(client_query(n)) for n in names))
        for name, answer in zip(names, answers, strict=True):
            assert answer is not None
            assert wire.parse_question(answer)[0] == name
            assert a_records(answer) == ["192.0.2.1"]

    run_against(fault, certificate, body, events)
    assert fault.connections == 1
    assert [t for _, t in events.connections] == ["tls"]
    assert events.errors == []


def test_a_connection_the_server_closed_is_replaced_and_the_query_sent_again(
    certificate: tuple[Path, Path, Path], events: TlsEvents
) -> None:
    fault = DotServerFault(close_on=2)  # each connection: the second query kills it

    async def body(fwd: Forwarder) -> None:
        assert a_records(await fwd.resolve(client_query("first.filterdns.test")))
        assert a_records(await fwd.resolve(client_query("second.filterdns.test")))

    run_against(fault, certificate, body, events)
    assert fault.connections == 2
    assert events.errors == []  # the retry on a new connection is transparent


def test_an_idle_connection_is_closed_and_the_next_query_opens_another(
    certificate: tuple[Path, Path, Path], events: TlsEvents
) -> None:
    fault = DotServerFault()

    async def body(fwd: Forwarder) -> None:
        assert a_records(await fwd.resolve(client_query("one.filterdns.test")))
        await asyncio.wait_for(fault.client_closed.wait(), 5)
        assert a_records(await fwd.resolve(client_query("two.filterdns.test")))

    run_against(fault, certificate, body, events, idle_timeout=0.2)
    assert fault.closed_by_client >= 1
    assert fault.connections == 2


def test_a_busy_connection_gets_a_second_one_beside_it(
    certificate: tuple[Path, Path, Path], events: TlsEvents
) -> None:
    total = PIPELINE_DEPTH + 9
    fault = DotServerFault(hold=total)

    async def body(fwd: Forwarder) -> None:
        # Answered at once: it opens the first connection before the burst.
        fault.hold = 1
        assert a_records(await fwd.resolve(client_query("opener.filterdns.test")))
        fault.hold = total
        names = [f"b{i}.filterdns.test" for i in range(total)]
        answers = await asyncio.gather(*(fwd.resolve(client_query(n)) for n in names))
        assert all(a_records(a) == ["192.0.2.1"] for a in answers)

    run_against(fault, certificate, body, events)
    assert fault.connections == 2
    assert events.errors == []

"""DNS over QUIC end to end: `filterdns serve` with `listen_quic`, queried with dnspython's
DoQ client and a raw aioquic client, with and without a ClientID in the server name (kdig
3.2.6 here is built without libngtcp2: its `+quic` falls back to TCP); bad streams
(a wrong length prefix, a non-zero message ID, bytes that are not DNS) close their
connection with DOQ_PROTOCOL_ERROR and the listener goes on; answers are padded."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from aioquic.asyncio.client import connect
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from dns_resolver.transports.listen_quic import DOQ_EXCESSIVE_LOAD, DOQ_PROTOCOL_ERROR
from tests.dns_resolver.encrypted import (
    KID,
    SERVER_NAME,
    RawDoq,
    doq_framed,
    encrypted_config,
    make_cert,
    quic_port,
    until,
)
from tests.dns_resolver.harness import (
    LOOPBACK,
    FaultUpstream,
    NsdServer,
    ServerProcess,
    TestZone,
    free_port,
    write_list,
)

ADULT = TestZone.BLOCKED.rstrip(".")
ALLOWED = TestZone.WWW.rstrip(".")


@pytest.fixture
def server(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> ServerProcess:
    config = encrypted_config(tmp_path)
    config["server"]["listen_quic"] = [f"{LOOPBACK}:{free_port()}"]
    config["upstream"] = {"servers": [nsd_upstream.upstream]}
    config["lists"] = [{"path": str(write_list(tmp_path, [ADULT], "adult.txt")),
                        "category": "adult"}]
    return start_filterdns(config)


def doq(server: ServerProcess, name: str, sni: str | None = SERVER_NAME,
        **kw: object) -> dns.message.Message:
    q = dns.message.make_query(name, "A", use_edns=0, **kw)  # type: ignore[arg-type]
    return dns.query.quic(q, LOOPBACK, port=quic_port(server), timeout=5, verify=False,
                          server_hostname=sni)


def test_doq_answers_and_the_client_id_picks_the_policy(server: ServerProcess) -> None:
    plain = doq(server, ADULT)
    assert plain.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in plain.answer[0]] == [TestZone.BLOCKED_A]
    kid = doq(server, ADULT, sni=f"{KID}.{SERVER_NAME}")
    assert kid.rcode() == dns.rcode.NXDOMAIN
    ede = [o for o in kid.options if o.otype == 15]
    assert ede and "policy=kid" in ede[0].text
    # No server name at all (a client that connects by address): no ClientID.
    assert doq(server, ADULT, sni=None).rcode() == dns.rcode.NOERROR
    # An unknown ClientID gets the policy the address would get.
    assert doq(server, ADULT, sni=f"stranger.{SERVER_NAME}").rcode() == dns.rcode.NOERROR


def test_doq_answers_are_padded_and_counted_as_quic(server: ServerProcess) -> None:
    answer = doq(server, ALLOWED)
    assert len(answer.to_wire()) % 468 == 0
    padding = [o for o in answer.options if o.otype == 12]
    assert padding
    assert server.metric("filterdns_queries_total", protocol="quic") >= 1


def test_a_server_name_we_do_not_serve_is_refused(server: ServerProcess) -> None:
    async def handshake() -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=["doq"],
                                   server_name="dns.example.net", verify_mode=ssl.CERT_NONE)
        async with connect(LOOPBACK, quic_port(server), configuration=config):
            pass

    with pytest.raises(ConnectionError):
        asyncio.run(handshake())
    assert server.metric("filterdns_listener_errors_total", transport="quic",
                         kind="server_name") == 1
    assert doq(server, ALLOWED).rcode() == dns.rcode.NOERROR


async def _bad_stream(port: int, payload: bytes) -> events.ConnectionTerminated:
    config = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=SERVER_NAME,
                               verify_mode=ssl.CERT_NONE)
    async with connect(LOOPBACK, port, configuration=config, create_protocol=RawDoq) as client:
        assert isinstance(client, RawDoq)
        client.send(payload)
        return await asyncio.wait_for(client.closed, 5)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x40" + doq_framed(ALLOWED)[2:], id="length-too-long"),
        pytest.param(b"\x00\x05" + doq_framed(ALLOWED)[2:], id="length-too-short"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(doq_framed(ALLOWED, qid=4242), id="message-id-not-0"),
        pytest.param(b"\x00\x04\xde\xad\xbe\xef", id="not-dns"),
    ],
)
def test_bad_streams_close_the_connection_with_doq_protocol_error(
    server: ServerProcess, payload: bytes
) -> None:
    closed = asyncio.run(_bad_stream(quic_port(server), payload))
    assert closed.error_code == DOQ_PROTOCOL_ERROR
    # The listener goes on.
    assert doq(server, ALLOWED).rcode() == dns.rcode.NOERROR


def test_many_queries_on_one_connection(server: ServerProcess) -> None:
    async def run() -> list[bytes]:
        config = QuicConfiguration(is_client=True, alpn_protocols=["doq"],
                                   server_name=SERVER_NAME, verify_mode=ssl.CERT_NONE)
        async with connect(LOOPBACK, quic_port(server), configuration=config,
                           create_protocol=RawDoq) as client:
            assert isinstance(client, RawDoq)
            ids = [client.send(doq_framed(n)) for n in (ALLOWED, ADULT) * 10]
            return await asyncio.wait_for(
                asyncio.gather(*(client.answer(i) for i in ids)), 10
            )

    answers = asyncio.run(run())
    assert len(answers) == 20
    for raw in answers:
        (length,) = struct.unpack_from("!H", raw)
        assert len(raw) == 2 + length
        msg = dns.message.from_wire(raw[2:])
        assert msg.id == 0 and msg.rcode() == dns.rcode.NOERROR


def test_a_connection_over_max_connections_is_closed_with_excessive_load(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> None:
    config = encrypted_config(tmp_path, max_connections=1)
    config["server"]["listen_quic"] = [f"{LOOPBACK}:{free_port()}"]
    config["upstream"] = {"servers": [nsd_upstream.upstream]}
    server = start_filterdns(config)
    quic = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=SERVER_NAME,
                             verify_mode=ssl.CERT_NONE)

    async def run() -> tuple[int, bytes]:
        port = quic_port(server)
        async with connect(LOOPBACK, port, configuration=quic, create_protocol=RawDoq) as first:
            assert isinstance(first, RawDoq)
            async with connect(LOOPBACK, port, configuration=quic,
                               create_protocol=RawDoq) as second:
                assert isinstance(second, RawDoq)
                closed = await asyncio.wait_for(second.closed, 5)
            # The first connection is still served.
            raw = await asyncio.wait_for(first.answer(first.send(doq_framed(ALLOWED))), 5)
            return closed.error_code, raw

    code, raw = asyncio.run(run())
    assert code == DOQ_EXCESSIVE_LOAD
    assert dns.message.from_wire(raw[2:]).rcode() == dns.rcode.NOERROR
    assert server.metric("filterdns_listener_errors_total", transport="quic",
                         kind="max_connections") == 1


def test_doq_takes_the_certificate_reloaded_by_sighup(
    tmp_path: Path, start_filterdns: Callable[..., ServerProcess], nsd_upstream: NsdServer
) -> None:
    cert, key = make_cert(tmp_path, SERVER_NAME)
    first = tmp_path / "first.pem"
    shutil.copy(cert, first)
    config = encrypted_config(tmp_path, cert=str(cert), key=str(key))
    config["server"]["listen_quic"] = [f"{LOOPBACK}:{free_port()}"]
    config["upstream"] = {"servers": [nsd_upstream.upstream]}
    server = start_filterdns(config)

    def answered(trusted: Path) -> bool:
        q = dns.message.make_query(ALLOWED, "A")
        try:
            dns.query.quic(q, LOOPBACK, port=quic_port(server), timeout=3,
                           verify=str(trusted), server_hostname=SERVER_NAME)
        except Exception:  # noqa: BLE001 - any failure to verify or connect counts
            return False
        return True

    assert answered(first)
    new_cert, new_key = make_cert(tmp_path, SERVER_NAME, stem="next")
    shutil.copy(new_cert, tmp_path / "second.pem")
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    server.send_signal(signal.SIGHUP)
    assert until(lambda: answered(tmp_path / "second.pem"))
    assert not answered(first)


def test_a_stream_over_max_inflight_is_reset_with_excessive_load(
    tmp_path: Path,
    start_filterdns: Callable[..., ServerProcess],
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    silent = make_fault_upstream(mode="timeout")  # queries stay in flight
    config = encrypted_config(tmp_path, max_inflight=1)
    config["server"]["listen_quic"] = [f"{LOOPBACK}:{free_port()}"]
    config["upstream"] = {"servers": [silent.upstream]}
    server = start_filterdns(config)
    quic = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=SERVER_NAME,
                             verify_mode=ssl.CERT_NONE)

    async def run() -> BaseException | None:
        async with connect(LOOPBACK, quic_port(server), configuration=quic,
                           create_protocol=RawDoq) as client:
            assert isinstance(client, RawDoq)
            client.send(doq_framed("one.example.com"))
            second = client.answer(client.send(doq_framed("two.example.com")))
            try:
                await asyncio.wait_for(second, 5)
            except ConnectionResetError as exc:
                return exc
            return None

    reset = asyncio.run(run())
    assert isinstance(reset, ConnectionResetError)
    assert reset.args == (DOQ_EXCESSIVE_LOAD,)

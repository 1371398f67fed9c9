"""What dnstap adds to an answer given in C: a batch of 64 cache hits through
`FastPath.serve` (recvmmsg, answers, sendmmsg), with and without CLIENT_QUERY and
CLIENT_RESPONSE frames. Divide the times by 64 for the cost per query; the load benchmark
(`python -m benchmarks.load --dnstap`) measures it at saturation."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from dns_resolver import wire
from dns_resolver.fast import fastpath
from dns_resolver.observability.dnstap import dnstap_prefix

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="fast path not built")

BATCH = 64
NAME = "www.example.org"


class Batch:
    """A FastPath holding one cached answer, a listener and a client on loopback."""

    def __init__(self, tap: bool) -> None:
        self.tap = tap
        self.fp = fastpath.FastPath(1232, 1000)
        self.fp.set_acl([(4, b"\x7f\x00\x00\x00", 8, 0)], [])
        question = wire.encode_name(NAME) + struct.pack("!HH", wire.TYPE_A, wire.CLASS_IN)
        record = wire.rr(wire.QNAME_POINTER, wire.TYPE_A, 300, bytes([192, 0, 2, 1]))
        body = wire.header(0, 0x8180, 1, 1, 0, 0) + question + record
        ttl_at = 12 + len(question) + 6
        key = fastpath.wire_key((NAME, wire.TYPE_A, wire.CLASS_IN, False))
        assert key is not None
        self.fp.store(key, body, (ttl_at,), (300,), time.monotonic(), 300, b"")
        if tap:
            prefix = dnstap_prefix(b"bench", b"filterdns")
            self.fp.set_dnstap(True, True, 0, bytes(16), prefix, fastpath.TAP_BUFFER)
        self.query = wire.header(1, 0x0100, 1, 0, 0, 0) + question
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.setblocking(False)
        self.address = self.listener.getsockname()

    def send(self) -> None:
        """The next batch of queries (the last batch's answers and frames are dropped)."""
        while True:
            try:
                self.client.recv(2048)
            except BlockingIOError:
                break
        self.fp.take_tap()
        for _ in range(BATCH):
            self.client.sendto(self.query, self.address)

    def serve(self) -> None:
        assert self.fp.serve(self.listener.fileno(), 1) == ()

    def close(self) -> None:
        self.listener.close()
        self.client.close()


@pytest.fixture(params=[False, True], ids=["off", "dnstap"])
def batch(request: pytest.FixtureRequest) -> Iterator[Batch]:
    b = Batch(request.param)
    yield b
    b.close()


@pytest.mark.benchmark(group="dnstap")
def test_cache_hits_batch(benchmark, batch: Batch) -> None:  # type: ignore[no-untyped-def]
    benchmark.pedantic(batch.serve, setup=batch.send, rounds=2000)
    assert batch.fp.fast_answers % BATCH == 0 and batch.fp.fast_answers >= BATCH
    data, frames = batch.fp.take_tap()  # the last batch's: a query and an answer each
    if batch.tap:
        assert frames == 2 * BATCH and len(data) > frames * 100
    else:
        assert (data, frames) == (b"", 0)

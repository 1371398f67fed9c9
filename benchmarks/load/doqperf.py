"""A small DNS-over-QUIC load client (dnsperf has no DoQ mode): `connections` QUIC
connections, `inflight` queries outstanding over all of them (one stream each, message
ID 0, RFC 9250), the names of a dnsperf query file in a loop, for `seconds`. Prints the
figures as JSON in dnsperf's terms: sent, completed, lost, qps, avg (seconds).

Run as `python -m benchmarks.load.doqperf --port P --queries FILE --ca-file CA`; the load
benchmark runs it pinned to the client's cores (`run_client`). It is Python on aioquic,
so on a small machine it may be the bottleneck: the server's CPU per answered query is
the figure to compare, and the report says how busy the client was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

TIMEOUT = 2.0  # seconds before an unanswered query counts as lost (dnsperf -t 2)


def wire_query(name: str, qtype: str) -> bytes:
    """A query with message ID 0 and EDNS (as dnsperf -e sends), length-prefixed."""
    types = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28}
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    msg = (struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 1) + qname
           + struct.pack("!HH", types.get(qtype.upper(), 1), 1) + opt)
    return struct.pack("!H", len(msg)) + msg


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.waiting: dict[int, tuple[asyncio.Future[float], float]] = {}
        self.buffers: dict[int, bytearray] = {}

    def ask(self, query: bytes) -> asyncio.Future[float]:
        stream_id = self._quic.get_next_available_stream_id()
        future: asyncio.Future[float] = self._loop.create_future()
        self.waiting[stream_id] = (future, time.monotonic())
        self._quic.send_stream_data(stream_id, query, end_stream=True)
        self.transmit()
        return future

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            buf = self.buffers.setdefault(event.stream_id, bytearray())
            buf += event.data
            if event.end_stream:
                del self.buffers[event.stream_id]
                future, sent = self.waiting.pop(event.stream_id, (None, 0.0))
                if future is not None and not future.done():
                    future.set_result(time.monotonic() - sent)
        elif isinstance(event, events.StreamReset):
            future, _ = self.waiting.pop(event.stream_id, (None, 0.0))
            if future is not None and not future.done():
                future.set_exception(ConnectionError("stream reset"))


async def _worker(client: _Client, queries: list[bytes], start: int, step: int,
                  share: int, deadline: float, totals: dict[str, float]) -> None:
    """Keep `share` queries outstanding on `client` until `deadline`."""
    sem = asyncio.Semaphore(share)
    i = start
    pending: set[asyncio.Task[None]] = set()

    async def one(query: bytes) -> None:
        try:
            latency = await asyncio.wait_for(client.ask(query), TIMEOUT)
        except (TimeoutError, ConnectionError):
            totals["lost"] += 1
        else:
            totals["completed"] += 1
            totals["latency"] += latency
        finally:
            sem.release()

    while time.monotonic() < deadline:
        await sem.acquire()
        totals["sent"] += 1
        task = asyncio.get_running_loop().create_task(one(queries[i % len(queries)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += step
    if pending:
        await asyncio.gather(*pending)


async def load(port: int, queries: list[bytes], seconds: float, *, ca_file: str,
               server_name: str, connections: int, inflight: int) -> dict[str, float]:
    """The figures of one run against 127.0.0.1:`port`."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=server_name,
                               verify_mode=ssl.CERT_REQUIRED)
    config.load_verify_locations(ca_file)
    totals = {"sent": 0.0, "completed": 0.0, "lost": 0.0, "latency": 0.0}
    async with _Connections(connections, port, config) as clients:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(
            _worker(c, queries, n, connections, max(1, inflight // connections), deadline,
                    totals)
            for n, c in enumerate(clients)
        ))
        elapsed = time.monotonic() - started
    done = totals["completed"]
    return {"sent": totals["sent"], "completed": done, "lost": totals["lost"],
            "qps": done / elapsed if elapsed else 0.0,
            "avg": totals["latency"] / done if done else 0.0, "seconds": elapsed}


class _Connections:
    """`connections` client connections, opened together and closed together."""

    def __init__(self, connections: int, port: int, config: QuicConfiguration) -> None:
        self.managers = [connect("127.0.0.1", port, configuration=config,
                                 create_protocol=_Client) for _ in range(connections)]

    async def __aenter__(self) -> list[_Client]:
        return [await m.__aenter__() for m in self.managers]  # type: ignore[misc]

    async def __aexit__(self, *exc: object) -> None:
        for manager in self.managers:
            await manager.__aexit__(None, None, None)


def read_queries(path: Path, limit: int = 100_000) -> list[bytes]:
    """The first `limit` lines of a dnsperf query file as DoQ queries."""
    out = []
    with path.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.append(wire_query(parts[0], parts[1]))
                if len(out) >= limit:
                    break
    return out


def run_client(port: int, queries: Path, seconds: float, *, cpus: str | None,
               ca_file: Path, server_name: str, connections: int,
               inflight: int = 200) -> dict[str, float]:
    """Run this module as a process (pinned to `cpus`); its figures."""
    argv = [sys.executable, "-m", "benchmarks.load.doqperf", "--port", str(port),
            "--queries", str(queries), "--seconds", str(seconds), "--ca-file", str(ca_file),
            "--server-name", server_name, "--connections", str(connections),
            "--inflight", str(inflight)]
    if cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                         cwd=Path(__file__).resolve().parents[2])
    if out.returncode:
        raise RuntimeError(f"doqperf failed: {out.stderr.strip()[-1000:]}")
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load.doqperf",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--server-name", default="dns.bench.test")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=200)
    args = parser.parse_args(argv)
    figures = asyncio.run(load(args.port, read_queries(args.queries), args.seconds,
                               ca_file=args.ca_file, server_name=args.server_name,
                               connections=args.connections, inflight=args.inflight))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

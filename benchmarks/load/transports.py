"""`python -m benchmarks.load --transports udp,tcp,dot,doh[,doq]`: the same mix over each
transport against filterdns, Unbound and dnsdist, and new TLS sessions per second.

Every server gets one thread pinned to one core, the same blocklist, the same upstream
(NSD) and the same certificate (one throw-away CA and server certificate per run). dnsperf
runs with `-c 4` long-lived connections (`-m tcp|dot|doh`); DoQ, which dnsperf does not
speak, is measured with `benchmarks.load.doqperf`. The handshake client (`python -m
benchmarks.load.transports handshakes ...`, run on the client's core) opens DoT
connections, sends one query on each and closes it: new sessions (full handshakes) and
resumed ones (the previous connection's TLS 1.3 ticket), counted apart; it reports the
rate, and the server's CPU per handshake is measured beside it.

dnsperf cannot present a TLS server name of our choosing, so DoT with a ClientID is
measured with `python -m benchmarks.load.transports pipeline` (also on the client's core):
STREAM_CLIENTS connections whose server name carries the ClientID of the bench config's
`child` policy (`CLIENT_ID`), each sending the mix in windows of PIPELINE_WINDOW pipelined
queries, against the same client without a ClientID (`dot-py` beside `dot-id`): the
client is Python, so its rates are its own limit; the server's CPU per query is the
figure to compare.

dnsperf 2.10's DoH mode stalls against dnsdist 1.7's DoH listener once more than two
queries are in flight on a connection: dnsdist (h2o) sends the answers of several streams
in one TLS record, Unbound one frame per record, and dnsperf takes at most one answer
from each record it reads (see docs/resolver-fastpath.md). The dnsdist DoH row is run
and reported as it comes out, lost queries included.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.load import data, runner, servers

TRANSPORTS = ("udp", "tcp", "dot", "doh", "doq")
STREAM_CLIENTS = 4  # dnsperf -c: long-lived connections
# Connections opened at once: enough that the rate is the server's, not one connection's
# round trips (a server that does not set TCP_NODELAY waits for delayed ACKs).
HANDSHAKE_THREADS = 32
SERVER_NAME = "dns.bench.test"
CLIENT_ID = servers.BENCH_CLIENT_ID
PIPELINE_WINDOW = 64  # queries in flight per connection of the pipeline client


def port_of(server: servers.Server, transport: str) -> int:
    """The server's port for `transport` (0: it does not serve it)."""
    return {
        "udp": server.port,
        "tcp": server.port,
        "dot": server.tls_port,
        "doh": server.https_port,
        "doq": getattr(server, "quic_port", 0),
    }[transport]


def measure(
    server: servers.Server,
    transport: str,
    queries: Path,
    seconds: float,
    *,
    cpus: str | None,
    tls: servers.ServeTls,
) -> runner.Run | None:
    """One timed run of the mix over `transport`, or None when the server lacks it."""
    port = port_of(server, transport)
    if not port:
        return None
    if transport == "doq":
        from benchmarks.load import doqperf

        pids = server.pids()
        cpu0 = servers.cpu_seconds(pids)
        figures = doqperf.run_client(port, queries, seconds, cpus=cpus, ca_file=tls.ca_file,
                                     server_name=tls.name, connections=STREAM_CLIENTS)
        cpu = servers.cpu_seconds(server.pids()) - cpu0
        completed = int(figures["completed"])
        rss, pss = servers.memory_kb(server.pids())
        return runner.Run(
            server=server.name, mix=transport, seconds=seconds, qps=float(figures["qps"]),
            sent=int(figures["sent"]), completed=completed, lost=int(figures["lost"]),
            avg_latency_ms=float(figures["avg"]) * 1000,
            cpu_us_per_query=cpu / completed * 1e6 if completed else 0.0,
            rss_mb=rss / 1024, pss_mb=pss / 1024, hit_rate=server.hit_rate(),
        )
    run = runner.measure(
        server, transport, queries, seconds, cpus=cpus, mode=transport, port=port,
        clients=STREAM_CLIENTS,
        doh_uri=f"https://{tls.name}:{port}{servers.DOH_PATH}",
    )
    return run


def handshakes(
    server: servers.Server, seconds: float, *, resume: bool, cpus: str | None,
    tls: servers.ServeTls,
) -> dict[str, object]:
    """New DoT sessions per second against `server` (full handshakes, or resumed ones),
    and the server's CPU per handshake."""
    args = ["handshakes", "--server-name", tls.name]
    if resume:
        args.append("--resume")
    return _client_run(server, args, seconds, cpus, tls, "cpu_us_per_handshake")


def _client_run(
    server: servers.Server, args: list[str], seconds: float, cpus: str | None,
    tls: servers.ServeTls, cpu_key: str,
) -> dict[str, object]:
    """This module's client `args` against `server`'s DoT port for `seconds`: its JSON
    result, with the server's CPU per unit of its `total` under `cpu_key`."""
    argv = [sys.executable, "-m", "benchmarks.load.transports", *args,
            "--port", str(server.tls_port), "--seconds", str(seconds),
            "--ca-file", str(tls.ca_file)]
    if cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    cpu0 = servers.cpu_seconds(server.pids())
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                         cwd=Path(__file__).resolve().parents[2])
    cpu = servers.cpu_seconds(server.pids()) - cpu0
    if out.returncode:
        raise RuntimeError(f"{server.name}: {out.stderr.strip()[-500:]}")
    result: dict[str, object] = json.loads(out.stdout)
    total = float(result["total"])  # type: ignore[arg-type]
    result[cpu_key] = cpu / total * 1e6 if total else 0.0
    return result


def run_transports(
    opts: runner.Options, transports: Sequence[str], say: Callable[[str], None] = print
) -> dict[str, object]:
    """Every server over every transport of `transports`, `opts.repeat` times interleaved;
    returns the report (also written as JSON)."""
    missing = servers.missing_tools(("dnsperf", "nsd", "openssl", *opts.peers))
    if missing:
        raise SystemExit("missing tools: " + ", ".join(missing))
    work = opts.results / "work"
    if work.exists():
        shutil.rmtree(work)
    ds = data.make_dataset(work / "data", opts.entries)
    snapshot = work / "data" / "blocklist.snap"
    runner.compile_snapshot(snapshot, f"{ds.domains_file}:adult:domains")
    ca_file, cert, key = servers.make_tls_certificate(work / "tls", SERVER_NAME)
    tls = servers.ServeTls(cert, key, ca_file, SERVER_NAME)
    nsd = servers.Nsd(work, ds, cpus=opts.client_cpus)
    nsd.start()
    runs: list[runner.Run] = []
    shakes: list[dict[str, object]] = []
    pipelines: list[dict[str, object]] = []
    kinds: list[tuple[str, type[servers.Server], dict[str, object]]] = [
        ("filterdns", servers.Filterdns,
         {"snapshot": snapshot, "serve": tls, "quic": "doq" in transports}),
    ]
    if opts.baseline is not None:
        kinds.append(("filterdns@base", servers.Filterdns,
                      {"snapshot": snapshot, "serve": tls, "quic": "doq" in transports,
                       "source": opts.baseline}))
    if "tcp" in transports:
        # TCP from asyncio streams (server.fast_path = false), for the C stream loop's
        # figures to be read against.
        kinds.append(("filterdns-py", servers.Filterdns,
                      {"snapshot": snapshot, "serve": tls, "fast_path": False}))
    kinds += [(p, servers.PEERS[p], {"serve": tls}) for p in opts.peers if p != "dnsmasq"]
    try:
        for label, cls, kwargs in [k for _ in range(opts.repeat) for k in kinds]:
            server = cls(work, ds, nsd.port, cpus=opts.server_cpus, **kwargs)  # type: ignore[arg-type]
            server.name = label
            server.start()
            try:
                runner.dnsperf(server.port, ds.warm_file, 60, cpus=opts.client_cpus, once=True)
                for transport in transports:
                    run = measure(server, transport, ds.mix_file, opts.seconds,
                                  cpus=opts.client_cpus, tls=tls)
                    if run is None:
                        say(f"  {label:<14} {transport:<8} not served")
                        continue
                    run.server = label
                    runs.append(run)
                    say(runner._line(run))
                if "dot" in transports and label.startswith("filterdns"):
                    # The ClientID's policy has a cache and learnt blocks of its own: warm.
                    pipelined(server, 60, ds.warm_file, CLIENT_ID, cpus=opts.client_cpus,
                              tls=tls, once=True)
                    for client_id in (None, CLIENT_ID):
                        shake = pipelined(server, opts.seconds, ds.mix_file, client_id,
                                          cpus=opts.client_cpus, tls=tls)
                        shake.update(server=label, kind="dot-id" if client_id else "dot-py")
                        pipelines.append(shake)
                        say(_pipeline_line(shake))
                if server.tls_port and label != "dnsdist" and opts.handshake_seconds:
                    for resume in (False, True):
                        shake = handshakes(server, opts.handshake_seconds, resume=resume,
                                           cpus=opts.client_cpus, tls=tls)
                        shake.update(server=label, kind="resumed" if resume else "full")
                        shakes.append(shake)
                        say(_shake_line(shake))
            finally:
                server.stop()
    finally:
        nsd.stop()
    all_runs = [asdict(r) for r in runs]
    if opts.repeat > 1:
        runs = runner.medians(runs)
    report: dict[str, object] = {
        "entries": opts.entries,
        "seconds": opts.seconds,
        "repeat": opts.repeat,
        "transports": list(transports),
        "dnsperf_clients": STREAM_CLIENTS,
        "runs": [asdict(r) for r in runs],
        "all_runs": all_runs,
        "handshakes": _median_shakes(shakes),
        "all_handshakes": shakes,
        "pipelined": _median_shakes(pipelines),
        "all_pipelined": pipelines,
        "ratios": ratios(runs),
    }
    opts.results.mkdir(parents=True, exist_ok=True)
    path = opts.results / f"transports-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    say(table(runs, report["handshakes"]))  # type: ignore[arg-type]
    for shake in report["pipelined"]:  # type: ignore[attr-defined]
        say(_pipeline_line(shake))
    say(f"wrote {path}")
    return report


def ratios(runs: list[runner.Run]) -> dict[str, dict[str, float]]:
    """filterdns/peer per transport: queries/s and CPU per query."""
    ours = {r.mix: r for r in runs if r.server == "filterdns"}
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        mine = ours.get(run.mix)
        if mine is None or run.server == "filterdns":
            continue
        entry = {"qps": mine.qps / run.qps if run.qps else math.nan}
        if run.cpu_us_per_query:
            entry["cpu"] = mine.cpu_us_per_query / run.cpu_us_per_query
        out[f"{run.mix}:{run.server}"] = entry
    return out


def table(runs: list[runner.Run], shakes: list[dict[str, object]]) -> str:
    rows = [f"{'server':<12}{'transport':<10}{'q/s':>10}{'x ours':>8}{'us/q':>8}{'x ours':>8}"
            f"{'lost':>9}"]
    ours = {r.mix: r for r in runs if r.server == "filterdns"}
    for r in sorted(runs, key=lambda r: (TRANSPORTS.index(r.mix), r.server)):
        mine = ours.get(r.mix)
        qr = f"{mine.qps / r.qps:.2f}" if mine and r.qps else "-"
        cr = (f"{mine.cpu_us_per_query / r.cpu_us_per_query:.2f}"
              if mine and r.cpu_us_per_query else "-")
        rows.append(f"{r.server:<12}{r.mix:<10}{r.qps:>10.0f}{qr:>8}{r.cpu_us_per_query:>8.2f}"
                    f"{cr:>8}{r.lost:>9}")
    rows.append("x ours = filterdns / this server (q/s: higher is better; us/q: lower is better)")
    for shake in shakes:
        rows.append(_shake_line(shake))
    return "\n".join(rows)


def pipelined(
    server: servers.Server, seconds: float, queries: Path, client_id: str | None, *,
    cpus: str | None, tls: servers.ServeTls, once: bool = False,
) -> dict[str, object]:
    """`queries` over DoT from the pipeline client (with `client_id` in the server name,
    or none; `once`: each query once, within `seconds`), and the server's CPU per query."""
    name = f"{client_id}.{tls.name}" if client_id else tls.name
    args = ["pipeline", "--server-name", name, "--queries", str(queries)]
    if once:
        args.append("--once")
    return _client_run(server, args, seconds, cpus, tls, "cpu_us_per_query")


def _pipeline_line(shake: dict[str, object]) -> str:
    return (f"  {shake['server']:<14} {shake['kind']:<8} {shake['rate']:>8.0f} q/s "
            f"(pipeline client)  server cpu {shake['cpu_us_per_query']:.2f} us/q")


def _shake_line(shake: dict[str, object]) -> str:
    return (f"  {shake['server']:<14} TLS {shake['kind']:<8} {shake['rate']:>8.0f} new "
            f"sessions/s ({shake['reused']} of {shake['total']} resumed)  server cpu "
            f"{shake['cpu_us_per_handshake']:.0f} us each")


def _median_shakes(shakes: list[dict[str, object]]) -> list[dict[str, object]]:
    groups: dict[tuple[object, object], list[dict[str, object]]] = {}
    for shake in shakes:
        groups.setdefault((shake["server"], shake["kind"]), []).append(shake)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=lambda s: float(s["rate"]))  # type: ignore[arg-type]
        chosen = dict(ordered[(len(ordered) - 1) // 2])
        chosen["rate_all"] = [round(float(s["rate"])) for s in group]  # type: ignore[arg-type]
        out.append(chosen)
    return out


# -- the handshake client (runs as its own process, on the client's cores) -------------


def _handshake_worker(
    port: int, ctx: ssl.SSLContext, name: str, resume: bool, deadline: float,
    counts: list[int],
) -> None:
    query = data_query()
    session: ssl.SSLSession | None = None
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(raw, server_hostname=name,
                                 session=session if resume else None) as conn:
                conn.sendall(query)
                # The answer; reading it also takes in the TLS 1.3 session ticket.
                head = _recv_exact(conn, 2)
                _recv_exact(conn, struct.unpack("!H", head)[0])
                counts[0] += 1
                counts[1] += bool(conn.session_reused)
                if resume:
                    session = conn.session


def data_query() -> bytes:
    """One framed query for a name of the bench zone (answered from the cache)."""
    name = data.allowed_name(0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    return struct.pack("!H", len(msg)) + msg


def _recv_exact(conn: ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


def handshake_client(port: int, seconds: float, ca_file: str, server_name: str,
                     resume: bool) -> dict[str, float]:
    """DoT connections (one query each) for `seconds` from HANDSHAKE_THREADS threads."""
    ctx = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + seconds
    counts = [[0, 0] for _ in range(HANDSHAKE_THREADS)]
    errors: list[BaseException] = []

    def work(c: list[int]) -> None:
        try:
            _handshake_worker(port, ctx, server_name, resume, deadline, c)
        except (OSError, ValueError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in counts]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"handshakes on port {port}: {len(errors)} connections failed, "
                         f"first: {errors[0]!r}")
    total = sum(c[0] for c in counts)
    return {"total": total, "reused": sum(c[1] for c in counts), "seconds": elapsed,
            "rate": total / elapsed if elapsed else 0.0}


def _wire_queries(path: Path) -> list[bytes]:
    """The framed queries of a dnsperf input file ("name type" lines), with an OPT record
    as dnsperf -e sends (blocks answered without EDNS carry no EDE to be learnt in C)."""
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        name, qtype = line.split()
        code = {"A": 1, "AAAA": 28, "MX": 15, "TXT": 16}.get(qtype.upper(), 1)
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split("."))
        msg = (struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 1) + qname + b"\0"
               + struct.pack("!HH", code, 1) + b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0))
        out.append(struct.pack("!H", len(msg)) + msg)
    return out


def pipeline_client(port: int, seconds: float, ca_file: str, server_name: str,
                    queries: Path, once: bool = False) -> dict[str, float]:
    """STREAM_CLIENTS DoT connections presenting `server_name`, each sending its share of
    `queries` in windows of PIPELINE_WINDOW and reading the answers, round after round for
    `seconds` (`once`: one round)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False  # a ClientID's name is not on the bench certificate
    frames = _wire_queries(queries)
    deadline = time.monotonic() + seconds
    counts = [0] * STREAM_CLIENTS
    errors: list[BaseException] = []

    def work(k: int) -> None:
        pos = k * len(frames) // STREAM_CLIENTS
        end = (k + 1) * len(frames) // STREAM_CLIENTS if once else math.inf
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=server_name) as conn:
                    while time.monotonic() < deadline and pos < end:
                        window = [frames[(pos + j) % len(frames)]
                                  for j in range(int(min(PIPELINE_WINDOW, end - pos)))]
                        pos += PIPELINE_WINDOW
                        conn.sendall(b"".join(window))
                        for _ in window:
                            head = _recv_exact(conn, 2)
                            _recv_exact(conn, struct.unpack("!H", head)[0])
                        counts[k] += len(window)
        except (OSError, ValueError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(STREAM_CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"pipeline on port {port}: {errors[0]!r}")
    total = sum(counts)
    return {"total": total, "seconds": elapsed, "rate": total / elapsed if elapsed else 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load.transports")
    sub = parser.add_subparsers(dest="command", required=True)
    shake = sub.add_parser("handshakes", help="DoT connections per second, one query each")
    shake.add_argument("--port", type=int, required=True)
    shake.add_argument("--seconds", type=float, default=5.0)
    shake.add_argument("--ca-file", required=True)
    shake.add_argument("--server-name", default=SERVER_NAME)
    shake.add_argument("--resume", action="store_true",
                       help="resume each connection's session from the previous one's ticket")
    pipe = sub.add_parser("pipeline", help="the mix over pipelined DoT connections")
    pipe.add_argument("--port", type=int, required=True)
    pipe.add_argument("--seconds", type=float, default=5.0)
    pipe.add_argument("--ca-file", required=True)
    pipe.add_argument("--server-name", default=SERVER_NAME)
    pipe.add_argument("--queries", type=Path, required=True)
    pipe.add_argument("--once", action="store_true", help="each query once, then stop")
    args = parser.parse_args(argv)
    if args.command == "pipeline":
        result = pipeline_client(args.port, args.seconds, args.ca_file, args.server_name,
                                 args.queries, args.once)
    else:
        result = handshake_client(args.port, args.seconds, args.ca_file, args.server_name,
                                  args.resume)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

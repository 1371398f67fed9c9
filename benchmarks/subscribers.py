"""`python -m benchmarks.subscribers`: the subscribers' figures (docs/subscribers.md).

1. The serving table with N subscribers (an IPv4 address and an IPv6 /56 each): bytes per
   address, build time, C lookup time, and the time one in-place change takes to be seen
   through another mapping of the file.
2. Imports into SQLite (or `--database postgresql://...`): `filterdns subscribers import`
   (half the rows) and
   `POST /api/subscribers/import` on a running server (the other half), in rows/s; then
   the server's full build of the table from that database, and a change's way from the
   API to the fast path (PUT answered -> dig from the address sees the policy).
3. RADIUS: Start packets per second (pyrad, 32 in flight), Start -> policy in force.
4. Queries/s and CPU per query (dnsperf, the load benchmark's mix) with the N subscribers
   loaded and the client 127.0.0.1 one of them, against the same server without
   subscribers, alternated in one run. dnsperf sends from one source address, so every
   query is a subscriber's, looked up among N.

    python -m benchmarks.subscribers --subscribers 2000000 --seconds 5
    python -m benchmarks.subscribers --subscribers 1000000 --parts imports \
        --database postgresql://user@127.0.0.1/filterdns

`--parts` picks the figures (table, imports, radius, qps; the server is started for all
but the table). The RADIUS Starts move the subscribers to addresses in 10.<--radius-net>/16,
so a rerun with another net changes every address again (each Start is then audited).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import httpx

from benchmarks.load import data, servers
from benchmarks.load.runner import compile_snapshot, dnsperf, measure
from dns_resolver.fast._subtable import SubscriberTable, capacity_for

V6_BASE = 0x20010DB8 << 32  # 2001:db8::/32, a /56 per subscriber below it
LOOKUPS = 1_000_000


def is_blocked(answer: dns.message.Message) -> bool:
    """filterdns says so with an Extended DNS Error (Blocked, Censored or Filtered); the
    bench zone may not hold the name, so NXDOMAIN alone says nothing."""
    return any(e.code in (15, 16, 17) for e in answer.extended_errors())


def ask(port: int, name: str, source: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A", use_edns=0)
    return dns.query.udp(query, "127.0.0.1", port=port, source=source, timeout=2)


def v4(i: int) -> int:
    return (10 << 24) + i  # 10.0.0.0/8 holds 16M


def v6_key(i: int) -> int:
    return V6_BASE | (i << 8)


def table_figures(count: int, work: Path) -> dict[str, Any]:
    entries = [(32, v4(i), 1, 0) for i in range(count)]
    entries += [(56, v6_key(i), 1, 0) for i in range(count)]
    path = str(work / "bench.table")
    started = time.perf_counter()
    table = SubscriberTable.create(path, capacity_for(len(entries)), entries)
    build = time.perf_counter() - started
    del entries
    rng = random.Random(16)
    held4 = b"".join(v4(rng.randrange(count)).to_bytes(4, "big") for _ in range(LOOKUPS))
    miss4 = b"".join(((11 << 24) + rng.randrange(1 << 24)).to_bytes(4, "big")
                     for _ in range(LOOKUPS))
    held6 = b"".join((v6_key(rng.randrange(count)) | rng.randrange(256)).to_bytes(8, "big")
                     + os.urandom(8) for _ in range(LOOKUPS))
    reader = SubscriberTable.open(path)
    lookups = {}
    for name, packed, width in (("ipv4_held", held4, 4), ("ipv4_miss", miss4, 4),
                                ("ipv6_held", held6, 16)):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            found = reader.count_held(packed, width)
            best = min(best, time.perf_counter() - started)
        assert found == (0 if name == "ipv4_miss" else LOOKUPS), (name, found)
        lookups[name + "_ns"] = round(best / LOOKUPS * 1e9, 1)
    # One change: written in place by the writer, seen through the reader's own mapping.
    seen = []
    for i in range(200):
        key = (12 << 24) + i
        started = time.perf_counter()
        table = table.set(32, key, 2, 0)
        while reader.lookup(key.to_bytes(4, "big")) is None:
            pass
        seen.append(time.perf_counter() - started)
    return {
        "subscribers": count,
        "addresses": table.count,
        "table_bytes": table.nbytes,
        "bytes_per_address": round(table.nbytes / table.count, 1),
        "build_s": round(build, 2),
        **lookups,
        "change_seen_us_median": round(statistics.median(seen) * 1e6, 2),
        "change_seen_us_max": round(max(seen) * 1e6, 2),
    }


def write_import(path: Path, first: int, count: int, csv: bool) -> None:
    with path.open("w") as out:
        if csv:
            out.write("id,policy,addresses\n")
        for i in range(first, first + count):
            a4 = ".".join(str(b) for b in v4(i).to_bytes(4, "big"))
            a6 = f"2001:db8:{i >> 8 & 0xFFFF:x}:{(i & 0xFF) << 8:x}::/56"
            if csv:
                out.write(f"s{i},child,{a4} {a6}\n")
            else:
                out.write(json.dumps({"id": f"s{i}", "policy": "child",
                                      "addresses": [a4, a6]}) + "\n")


class SubscriberFilterdns(servers.Filterdns):
    """The load benchmark's filterdns, with `[subscribers]` (and the admin API, RADIUS)."""

    name = "filterdns+subs"

    def __init__(self, *args: Any, state: Path, radius_port: int, admin_port: int,
                 database: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = state
        self.radius_port = radius_port
        self.admin_port = admin_port
        self.database = database

    def prepare(self) -> None:
        super().prepare()
        text = self.config.read_text()
        text = re.sub(r"(workers = \d+\n)", rf'\1data_dir = "{self.state}"\n', text, count=1)
        text += f"""
# The addresses the change figures use answer by network until a subscriber holds them.
[policies.open]
clients = ["127.0.3.0/24", "127.0.4.0/24"]
block = []

[subscribers]
enabled = true
database = "{self.database}"

[admin]
enabled = true
listen = "127.0.0.1:{self.admin_port}"

[radius]
listen = "127.0.0.1:{self.radius_port}"
secret = "bench"
clients = ["127.0.0.0/8"]
"""
        self.config.write_text(text)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "filterdns", *args], capture_output=True,
                          text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"filterdns {' '.join(args)}: {done.stderr[-2000:]}")
    return done


def radius_figures(server: SubscriberFilterdns, count: int, net: int = 200) -> dict[str, Any]:
    from pyrad import packet
    from pyrad.dictionary import Dictionary

    from subscribers.radius import DICTIONARY

    dictionary = Dictionary(str(DICTIONARY))

    def start(sid: str, address: str, ident: int, status: str = "Start") -> bytes:
        pkt = packet.AcctPacket(id=ident & 0xFF, secret=b"bench", dict=dictionary)
        pkt["User-Name"] = sid
        pkt["Acct-Status-Type"] = status
        pkt["Acct-Session-Id"] = f"bench-{ident}"
        pkt["Framed-IP-Address"] = address
        return pkt.RequestPacket()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.radius_port))
    packets = [start(f"s{i}", f"10.{net}.{i >> 8 & 255}.{i & 255}", i) for i in range(count)]
    started = time.perf_counter()
    sent = answered = 0
    window = 32
    while answered < count:
        while sent < count and sent - answered < window:
            sock.send(packets[sent])
            sent += 1
        sock.recv(4096)
        answered += 1
    rate = count / (time.perf_counter() - started)
    # Start -> policy in force: dig from the address until the child policy blocks.
    latencies = []
    blocked = f"{data.blocked_name(0)}."
    for i in range(20):
        address = f"127.0.3.{i + 1}"
        sock.send(start(f"s{i}", address, 1000 + i, "Stop"))  # unmapped first (a rerun)
        sock.recv(4096)
        while is_blocked(ask(server.port, blocked, address)):  # "open" by its network
            time.sleep(0.01)
        sock.send(start(f"s{i}", address, 1000 + i))
        started = time.perf_counter()
        sock.recv(4096)
        while not is_blocked(ask(server.port, blocked, address)):
            if time.perf_counter() - started > 5:
                raise RuntimeError(f"{address} never blocked")
        latencies.append(time.perf_counter() - started)
    sock.close()
    return {
        "radius_starts": count,
        "radius_starts_per_s": round(rate),
        "start_to_policy_ms_median": round(statistics.median(latencies) * 1000, 1),
        "start_to_policy_ms_max": round(max(latencies) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per dnsperf run")
    parser.add_argument("--repeat", type=int, default=2, help="alternated q/s runs each")
    parser.add_argument("--radius-starts", type=int, default=5000)
    parser.add_argument("--radius-net", type=int, default=200,
                        help="the Starts' addresses are in 10.NET.0.0/16")
    parser.add_argument("--database", default="",
                        help="the subscribers' database URL (default: SQLite in --state)")
    parser.add_argument("--parts", default="table,imports,radius,qps",
                        help="comma-separated: table, imports, radius, qps")
    parser.add_argument("--server-cpus", default="1")
    parser.add_argument("--client-cpus", default="0")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--state", type=Path,
                        help="keep the subscribers' database here; when it is there already, "
                        "the imports are skipped (the other figures measured again)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="filterdns-subs-"))
    report: dict[str, Any] = {"database": "postgresql" if args.database else "sqlite"}
    try:
        if "table" in parts:
            report["table"] = table_figures(args.subscribers, work)
            print(json.dumps(report["table"]), flush=True)
        if not parts - {"table"}:
            return write_report(args.results, report)

        ds = data.make_dataset(work / "data", 100_000)
        snapshot = work / "data" / "blocklist.snap"
        compile_snapshot(snapshot, f"{ds.domains_file}:adult:domains")
        nsd = servers.Nsd(work, ds, cpus=args.client_cpus)
        nsd.start()
        state = (args.state or work / "state").resolve()
        reuse = "imports" not in parts or already_there(args.database, state)
        try:
            half = args.subscribers // 2
            jsonl = work / "api.jsonl"
            csv_file = work / "cli.csv"
            if not reuse:
                write_import(csv_file, 0, half, csv=True)
                write_import(jsonl, half, args.subscribers - half, csv=False)
            subs = SubscriberFilterdns(work, ds, nsd.port, cpus=args.server_cpus,
                                       snapshot=snapshot, state=state,
                                       radius_port=servers.free_port(),
                                       admin_port=servers.free_port(),
                                       database=args.database)
            subs.prepare()  # the CLI reads the same config
            if not reuse:
                started = time.perf_counter()
                cli("subscribers", "import", str(csv_file), "--quiet",
                    "--config", str(subs.config))
                report["import_cli_rows_per_s"] = round(half / (time.perf_counter() - started))
                print(f"CLI import: {report['import_cli_rows_per_s']} rows/s", flush=True)
            startup = subs.start()
            report["startup_s" if reuse else "startup_with_half_s"] = round(startup, 2)
            token = cli("admin", "token", "create", "--role", "admin", "--name", "bench",
                        "--config", str(subs.config)).stdout.strip()
            auth = {"Authorization": f"Bearer {token}"}
            base = f"http://127.0.0.1:{subs.admin_port}"
            if not reuse:
                started = time.perf_counter()
                with jsonl.open("rb") as body:
                    r = httpx.post(f"{base}/api/subscribers/import", content=body, timeout=3600,
                                   headers={**auth, "Content-Type": "application/x-ndjson"})
                r.raise_for_status()
                report["import_api_rows_per_s"] = round(
                    r.json()["imported"] / (time.perf_counter() - started))
                print(f"API import: {report['import_api_rows_per_s']} rows/s", flush=True)
            # The client of dnsperf is a subscriber too (same policy as without subscribers).
            r = httpx.put(f"{base}/api/subscribers/bench-client", headers=auth, timeout=60,
                          json={"policy": "default", "addresses": ["127.0.0.1"]})
            r.raise_for_status()
            # API -> fast path: PUT answered, then dig from the address until it blocks.
            took = []
            blocked = f"{data.blocked_name(1)}."
            for i in range(20):
                address = f"127.0.4.{i + 1}"
                # From "open" (its network: answered) to "child" (blocked).
                httpx.delete(f"{base}/api/subscribers/p{i}", headers=auth, timeout=60)
                while is_blocked(ask(subs.port, blocked, address)):
                    time.sleep(0.01)
                r = httpx.put(f"{base}/api/subscribers/p{i}", headers=auth, timeout=60,
                              json={"policy": "child", "addresses": [address]})
                started = time.perf_counter()
                r.raise_for_status()
                while not is_blocked(ask(subs.port, blocked, address)):
                    if time.perf_counter() - started > 5:
                        raise RuntimeError(f"{address} never blocked")
                took.append(time.perf_counter() - started)
            report["api_change_to_fast_path_ms_median"] = round(statistics.median(took) * 1000, 1)
            report["api_change_to_fast_path_ms_max"] = round(max(took) * 1000, 1)
            if "radius" in parts:
                report.update(radius_figures(subs, args.radius_starts, args.radius_net))
            print(json.dumps(report), flush=True)
            subs.stop()
            if "qps" not in parts:
                return write_report(args.results, report)
            # Start-up now builds the whole table from the database.
            report["startup_with_all_s"] = round(subs.start(), 2)
            plain = servers.Filterdns(work, ds, nsd.port, cpus=args.server_cpus,
                                      snapshot=snapshot)
            plain.start()
            runs: dict[str, list[Any]] = {"with": [], "without": []}
            try:
                for server in (subs, plain):
                    dnsperf(server.port, ds.warm_file, 60, cpus=args.client_cpus, once=True)
                for _ in range(args.repeat):
                    for label, server in (("with", subs), ("without", plain)):
                        run = measure(server, "mix", ds.mix_file, args.seconds,
                                      cpus=args.client_cpus)
                        runs[label].append(run)
                        print(f"{label} subscribers: {run.qps:.0f} q/s, "
                              f"{run.cpu_us_per_query:.1f} us CPU/query, "
                              f"{run.rss_mb:.0f} MB RSS", flush=True)
                fallbacks = subs.metrics_text()
            finally:
                plain.stop()
                subs.stop()
            report["qps_with"] = [round(r.qps) for r in runs["with"]]
            report["qps_without"] = [round(r.qps) for r in runs["without"]]
            report["cpu_us_with"] = [round(r.cpu_us_per_query, 2) for r in runs["with"]]
            report["cpu_us_without"] = [round(r.cpu_us_per_query, 2) for r in runs["without"]]
            report["qps_ratio"] = round(statistics.median(report["qps_with"])
                                        / statistics.median(report["qps_without"]), 3)
            report["rss_mb_with"] = round(runs["with"][-1].rss_mb)
            report["rss_mb_without"] = round(runs["without"][-1].rss_mb)
            report["policy_fallbacks"] = [
                line for line in fallbacks.splitlines()
                if line.startswith("filterdns_fastpath_fallbacks_total") and "policy" in line
            ]
        finally:
            nsd.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write_report(args.results, report)


def already_there(database: str, state: Path) -> bool:
    """Whether the subscribers' database holds subscribers already (imports are skipped)."""
    if not database:
        return (state / "subscribers.db").exists()
    from subscribers.store import SubscriberStore

    store = SubscriberStore(database)
    try:
        return store.count()[0] > 0
    finally:
        store.close()


def write_report(results: Path, report: dict[str, Any]) -> int:
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"subscribers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

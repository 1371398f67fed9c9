"""Command line of the load benchmark: `python -m benchmarks.load` or `filterdns bench`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.load import runner, transports

DESCRIPTION = (
    "Load benchmark: filterdns against Unbound, dnsmasq and dnsdist with dnsperf on "
    "loopback, one thread each pinned to one core (dnsperf and the NSD upstream on the "
    "other), a blocklist of N entries in each server's format, a mix of 80%% repeated "
    "allowed names, 10%% blocked and 10%% NXDOMAIN/NODATA, a miss-heavy mix (50%% names "
    "never asked before), a fixed-rate run at 10,000 q/s for the 99th percentile and a "
    "run across SIGHUP reloads. Prints a table with the ratios filterdns/peer and writes "
    "JSON and a PNG plot under --results. Needs dnsperf, nsd, unbound, dnsmasq, dnsdist."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds per server, 100,000 entries, no miss-heavy run")
    parser.add_argument("--entries", type=int, default=100_000,
                        help="blocklist entries (default 100000; also 1000000, 5000000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per timed run")
    parser.add_argument("--workers", type=int, default=1,
                        help="also run filterdns with this many workers (peers: threads)")
    parser.add_argument("--peers", default="unbound,dnsmasq,dnsdist",
                        help="comma-separated peers to compare (default: all three)")
    parser.add_argument("--reloads", type=int, default=10,
                        help="SIGHUP reloads during the reload run (0: skip it)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every server this many times, interleaved; report medians")
    parser.add_argument("--querylog", action="store_true",
                        help="also run filterdns with the query log on (filterdns+log)")
    parser.add_argument("--ratelimit", action="store_true",
                        help="also run filterdns with rate limiting on, its limits far "
                        "above the load (filterdns+rl): the cost of the check per query")
    parser.add_argument("--dnstap", action="store_true",
                        help="also run filterdns with dnstap on (filterdns+tap): client "
                        "queries and responses to a collector that reads and discards")
    parser.add_argument("--dnstap-forwarder", action="store_true",
                        help="also run filterdns with dnstap's forwarder messages too "
                        "(filterdns+tapfwd): all four message types")
    parser.add_argument("--console", action="store_true",
                        help="also run filterdns with the query log and the console's store "
                        "and statistics on (filterdns+console)")
    parser.add_argument("--rates", default="",
                        help="comma-separated fixed rates (q/s) to run the cache-heavy mix at "
                        "as well (mix@RATE), e.g. 100000,20000 for the console's A/B")
    parser.add_argument("--mixes", default="",
                        help="run only these of mix, miss, p99@10k (comma-separated; "
                        "default all)")
    parser.add_argument("--text-rules", action="store_true",
                        help="also run filterdns with an expressions list added "
                        "(filterdns+text): misses run the text rules")
    parser.add_argument("--upstream-transport", choices=("udp", "dot"), default="udp",
                        help="dot: instead of the peer comparison, the miss-heavy mix "
                        "forwarded over DoT to an Unbound in front of NSD, against the "
                        "same over UDP and Unbound forwarding over DoT (forward-tls-upstream)")
    parser.add_argument("--forward-rule", action="store_true",
                        help="also run filterdns with a [[forward]] rule sending "
                        "new.bench.test (the miss-heavy mix's new names) to a second NSD "
                        "(filterdns+rule)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also run the filterdns of another checkout DIR (built in "
                        "place), interleaved with ours: before/after (name@base)")
    parser.add_argument("--observed", action="store_true",
                        help="also run filterdns with newly observed domains tracked "
                        "(filterdns+nod: [observed] enabled, docs/leads.md)")
    parser.add_argument("--transports", default="",
                        help="instead of the peer comparison: the mix over each of these "
                        "transports (udp,tcp,dot,doh,doq), dnsperf -c 4 on long-lived "
                        "connections, against filterdns and the --peers that speak them "
                        "(Unbound, dnsdist), one certificate for all; and new TLS sessions "
                        "per second, full and resumed")
    parser.add_argument("--handshake-seconds", type=float, default=5.0,
                        help="seconds per TLS handshake run with --transports (0: none)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="where JSON and PNG go (default ./results)")
    parser.add_argument("--server-cpus", default="1", help="taskset CPU list for servers")
    parser.add_argument("--client-cpus", default="0", help="taskset CPU list for dnsperf/NSD")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bench` to the `filterdns` subcommands."""
    parser = subparsers.add_parser("bench", help="run the load benchmark against peers",
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark as `args` say; returns the exit status."""
    peers = tuple(p for p in args.peers.split(",") if p)
    opts = runner.Options(
        entries=100_000 if args.smoke else args.entries,
        seconds=3.0 if args.smoke else args.seconds,
        workers=args.workers,
        peers=peers,
        reloads=3 if args.smoke and args.reloads else args.reloads,
        smoke=args.smoke,
        # Absolute: the peers' configs include files by path, and unbound changes directory.
        results=args.results.resolve(),
        server_cpus=args.server_cpus,
        client_cpus=args.client_cpus,
        repeat=1 if args.smoke else max(1, args.repeat),
        querylog=args.querylog,
        dnstap=args.dnstap,
        dnstap_forwarder=args.dnstap_forwarder,
        console=args.console,
        text_rules=args.text_rules,
        upstream_transport=args.upstream_transport,
        ratelimit=args.ratelimit,
        observed=args.observed,
        transports=tuple(t for t in args.transports.split(",") if t),
        handshake_seconds=1.0 if args.smoke else args.handshake_seconds,
        forward_rule=args.forward_rule,
        baseline=args.baseline.resolve() if args.baseline is not None else None,
        rates=tuple(int(r) for r in args.rates.split(",") if r),
        mixes=tuple(m for m in args.mixes.split(",") if m),
    )
    unknown_mixes = set(opts.mixes) - {"mix", "miss", "p99@10k"}
    if unknown_mixes:
        print(f"error: unknown mix(es) {', '.join(sorted(unknown_mixes))}; choose from "
              "mix,miss,p99@10k", file=sys.stderr)
        return 2
    unknown = set(opts.transports) - set(transports.TRANSPORTS)
    if unknown:
        print(f"error: unknown transport(s) {', '.join(sorted(unknown))}; choose from "
              f"{','.join(transports.TRANSPORTS)}", file=sys.stderr)
        return 2
    if opts.transports:
        transports.run_transports(opts, opts.transports)
        return 0
    if opts.upstream_transport == "dot":
        runner.run_transport(opts)
        return 0
    report = runner.run_all(opts)
    lost = [
        r for r in report["runs"]  # type: ignore[attr-defined]
        if r["server"].startswith("filterdns") and r["mix"] != "miss" and r["lost"]
    ]
    for key in ("reloads", "reloads_rule"):
        reloads = report.get(key)
        if isinstance(reloads, dict) and reloads["lost"]:
            print(f"FAIL: {reloads['lost']} queries lost across reloads ({key})", file=sys.stderr)
            return 1
    if lost and args.smoke:
        print("FAIL: lost queries: " + ", ".join(r["server"] for r in lost), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))

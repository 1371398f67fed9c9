"""Runs dnsperf against each server and turns the runs into a table, JSON and a plot."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.load import data, servers

DNSPERF_INFLIGHT = 200  # queries in flight (-q)
# Client sockets (-c): SO_REUSEPORT spreads clients over workers by source port, so one
# socket would keep every query on one worker.
DNSPERF_SOCKETS = 8


@dataclass
class Run:
    """One dnsperf run against one server."""

    server: str
    mix: str
    seconds: float
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    avg_latency_ms: float = 0.0
    p99_latency_ms: float | None = None
    cpu_us_per_query: float = 0.0
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    hit_rate: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


_FIELDS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "avg": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
}
_VERBOSE = re.compile(r"^> \S+ \S+ \S+ ([\d.]+)$", re.M)


def dnsperf(
    port: int,
    queries: Path,
    seconds: float,
    *,
    cpus: str | None,
    rate: int | None = None,
    verbose: bool = False,
    once: bool = False,
    mode: str = "udp",
    clients: int = DNSPERF_SOCKETS,
    doh_uri: str = "",
) -> dict[str, float | list[float]]:
    """Run dnsperf (EDNS on, 200 in flight) over `mode` (udp, tcp, dot, doh) with
    `clients` sockets; returns its figures (and latencies if verbose)."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-e",
            "-q", str(DNSPERF_INFLIGHT), "-c", str(clients), "-t", "2"]
    if mode != "udp":
        argv += ["-m", mode]
    if mode == "doh":
        argv += ["-O", f"doh-uri={doh_uri}"]
    argv += ["-n", "1"] if once else ["-l", str(seconds)]
    if rate:
        argv += ["-Q", str(rate)]
    if verbose:
        argv += ["-v"]
    if cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    result: dict[str, float | list[float]] = {}
    for key, pattern in _FIELDS.items():
        found = pattern.search(out)
        if found is None:
            raise RuntimeError(f"unexpected dnsperf output: {out[-2000:]}")
        result[key] = float(found.group(1))
    if verbose:
        result["latencies"] = [float(v) for v in _VERBOSE.findall(out)]
    return result


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def measure(
    server: servers.Server,
    mix: str,
    queries: Path,
    seconds: float,
    *,
    cpus: str | None,
    rate: int | None = None,
    verbose: bool = False,
    mode: str = "udp",
    port: int = 0,
    clients: int = DNSPERF_SOCKETS,
    doh_uri: str = "",
) -> Run:
    """One timed run: dnsperf figures, server CPU over the run, memory after it. `mode`,
    `port` (default the server's plain port), `clients`, `doh_uri`: as for `dnsperf`."""
    pids = server.pids()
    cpu0 = servers.cpu_seconds(pids)
    writers = servers.writer_pids(pids)
    writer0 = servers.cpu_seconds(writers)
    rows0 = server.console_rows()
    figures = dnsperf(port or server.port, queries, seconds, cpus=cpus, rate=rate,
                      verbose=verbose, mode=mode, clients=clients, doh_uri=doh_uri)
    cpu = servers.cpu_seconds(server.pids()) - cpu0
    writer_cpu = servers.cpu_seconds(writers) - writer0
    rss, pss = servers.memory_kb(server.pids())
    completed = int(figures["completed"])  # type: ignore[arg-type]
    console = {}
    if rows0 is not None:
        console = console_figures(server, writers, writer0, rows0, completed)
        console["serving_cpu_us"] = (
            round((cpu - writer_cpu) / completed * 1e6, 3) if completed else 0.0
        )
    run = Run(
        server=server.name,
        mix=mix,
        seconds=seconds,
        qps=float(figures["qps"]),  # type: ignore[arg-type]
        sent=int(figures["sent"]),  # type: ignore[arg-type]
        completed=completed,
        lost=int(figures["lost"]),  # type: ignore[arg-type]
        avg_latency_ms=float(figures["avg"]) * 1000,  # type: ignore[arg-type]
        cpu_us_per_query=cpu / completed * 1e6 if completed else 0.0,
        rss_mb=rss / 1024,
        pss_mb=pss / 1024,
    )
    run.extra.update(console)
    if verbose:
        p99 = percentile(figures["latencies"], 0.99)  # type: ignore[arg-type]
        run.p99_latency_ms = p99 * 1000 if p99 is not None else None
    try:
        run.hit_rate = server.hit_rate()
        run.extra.update(server.details())
    except Exception as exc:  # a stats endpoint that failed must not lose the run
        run.extra["hit_rate_error"] = str(exc)
    return run


def console_figures(
    server: servers.Server,
    writers: list[int],
    writer0: float,
    rows0: tuple[float, float],
    answered: int,
) -> dict[str, object]:
    """The console's query-log writer over a run: the rows it wrote and dropped of the
    `answered` queries, and its CPU per row written, waiting (at most 60 s) until every
    row is written or dropped, since a writer behind catches up after the timed window.
    `serving_cpu_us` (added by `measure`) is the rest of the server's CPU per query."""
    deadline = time.monotonic() + 60
    seen, still = (-1.0, -1.0), time.monotonic()
    while True:
        rows = server.console_rows() or rows0
        written, dropped = rows[0] - rows0[0], rows[1] - rows0[1]
        if written + dropped >= answered or time.monotonic() > deadline:
            break
        if rows != seen:
            seen, still = rows, time.monotonic()
        elif time.monotonic() - still > 5:
            break  # nothing moved for 5 s: some rows were lost uncounted (a writer died)
        time.sleep(0.25)
    cpu = servers.cpu_seconds(writers) - writer0
    return {
        "rows_written": int(written),
        "rows_dropped": int(dropped),
        "writer_cpu_us_per_row": round(cpu / written * 1e6, 3) if written else None,
    }


def console_ab(runs: list[Run]) -> dict[str, dict[str, object]]:
    """Per mix, `filterdns+console` against `filterdns+log` (the query log alone): the
    serving process's CPU per query of each, medians over the repeats, and the
    difference, which is what the console adds to answering; the writer's CPU per row
    and the rows written and dropped of those answered."""
    out: dict[str, dict[str, object]] = {}
    for mix in dict.fromkeys(r.mix for r in runs):
        log = [r for r in runs if r.server == "filterdns+log" and r.mix == mix]
        con = [r for r in runs if r.server == "filterdns+console" and r.mix == mix]
        if not log or not con:
            continue
        base = statistics.median(r.cpu_us_per_query for r in log)
        mine = statistics.median(float(r.extra["serving_cpu_us"]) for r in con)  # type: ignore[arg-type]
        per_row = [r.extra["writer_cpu_us_per_row"] for r in con
                   if r.extra.get("writer_cpu_us_per_row") is not None]  # fmt: skip
        out[mix] = {
            "log_cpu_us": round(base, 3),
            "console_serving_cpu_us": round(mine, 3),
            "console_minus_log_us": round(mine - base, 3),
            "log_cpu_us_all": [round(r.cpu_us_per_query, 3) for r in log],
            "console_serving_cpu_us_all": [r.extra["serving_cpu_us"] for r in con],
            "writer_cpu_us_per_row": (
                round(statistics.median(per_row), 3) if per_row else None  # type: ignore[arg-type]
            ),
            "answered": [r.completed for r in con],
            "rows_written": [r.extra["rows_written"] for r in con],
            "rows_dropped": [r.extra["rows_dropped"] for r in con],
        }
    return out


def compile_snapshot(snapshot: Path, *lists: str) -> None:
    """`filterdns compile` the `--list` specs (PATH:CATEGORY:FORMAT) into `snapshot`."""
    subprocess.run(
        [sys.executable, "-m", "filterdns", "compile",
         *(arg for spec in lists for arg in ("--list", spec)), "-o", str(snapshot)],
        check=True, capture_output=True, timeout=3600,
    )


def miss_file(directory: Path, tag: str, lines: int) -> Path:
    """A miss-heavy file whose new names were never asked of any server before."""
    rng = random.Random(tag)
    mix = (directory / "mix.txt").read_text().splitlines()
    path = directory / f"miss-{tag}.txt"
    with path.open("w") as out:
        for i in range(lines):
            if i % 2 == 0:
                out.write(f"{tag}{i}.new.{data.ZONE} A\n")
            else:
                out.write(rng.choice(mix) + "\n")
    return path


@dataclass
class Options:
    """What `cli.py` asks for."""

    entries: int = 100_000
    seconds: float = 10.0
    workers: int = 1
    peers: tuple[str, ...] = ("unbound", "dnsmasq", "dnsdist")
    reloads: int = 10
    smoke: bool = False
    results: Path = Path("results")
    server_cpus: str = "1"
    client_cpus: str = "0"
    repeat: int = 1
    querylog: bool = False
    dnstap: bool = False
    dnstap_forwarder: bool = False
    console: bool = False
    text_rules: bool = False
    upstream_transport: str = "udp"
    ratelimit: bool = False
    observed: bool = False
    transports: tuple[str, ...] = ()
    handshake_seconds: float = 5.0
    forward_rule: bool = False
    baseline: Path | None = None
    rates: tuple[int, ...] = ()  # fixed-rate runs of the cache-heavy mix ("mix@RATE")
    mixes: tuple[str, ...] = ()  # of "mix", "miss", "p99@10k": only these (none: all)


def run_all(opts: Options, log: object = print) -> dict[str, object]:
    """Every scenario; returns the report (also written as JSON and PNG)."""
    say = log  # type: ignore[assignment]
    missing = servers.missing_tools(("dnsperf", "nsd", *opts.peers))
    if missing:
        raise SystemExit(
            "missing tools: " + ", ".join(missing)
            + " (Debian: apt-get install -y dnsperf nsd unbound dnsmasq dnsdist)"
        )
    work = opts.results / "work"
    if work.exists():
        shutil.rmtree(work)
    ds = data.make_dataset(work / "data", opts.entries)
    snapshot = work / "data" / "blocklist.snap"
    compile_started = time.monotonic()
    compile_snapshot(snapshot, f"{ds.domains_file}:adult:domains")
    say(f"compiled {opts.entries} entries in {time.monotonic() - compile_started:.1f}s")
    nsd = servers.Nsd(work, ds, cpus=opts.client_cpus)
    nsd.start()
    # --forward-rule: the rule's servers, a second NSD with the same zone on the same CPUs.
    rule_nsd = servers.Nsd(work / "rule", ds, cpus=opts.client_cpus)
    if opts.forward_rule:
        rule_nsd.start()
    runs: list[Run] = []
    extra: dict[str, object] = {}
    try:
        kinds: list[tuple[str, type[servers.Server], dict[str, object]]] = [
            ("filterdns", servers.Filterdns, {"workers": 1, "snapshot": snapshot})
        ]
        if opts.querylog:
            kinds.append(
                ("filterdns+log", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "querylog": True})
            )
        if opts.ratelimit:
            kinds.append(
                ("filterdns+rl", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "ratelimit": True})
            )
        if opts.dnstap:
            kinds.append(
                ("filterdns+tap", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "dnstap": True,
                  "sink_cpus": opts.client_cpus})
            )
        if opts.dnstap_forwarder:
            kinds.append(
                ("filterdns+tapfwd", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "dnstap": True,
                  "sink_cpus": opts.client_cpus, "dnstap_messages": servers.DNSTAP_ALL})
            )
        if opts.observed:
            kinds.append(
                ("filterdns+nod", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "observed": True})
            )
        if opts.console:
            kinds.append(
                ("filterdns+console", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "querylog": True, "console": True})
            )
        if opts.text_rules:
            text_snapshot = work / "data" / "blocklist-text.snap"
            compile_snapshot(text_snapshot, f"{ds.domains_file}:adult:domains",
                             f"{ds.expressions_file}:gambling:expressions")
            kinds.append(
                ("filterdns+text", servers.Filterdns, {"workers": 1, "snapshot": text_snapshot})
            )
        if opts.forward_rule:
            kinds.append(
                ("filterdns+rule", servers.Filterdns,
                 {"workers": 1, "snapshot": snapshot, "rule_port": rule_nsd.port})
            )
        if opts.baseline is not None:
            kinds += [
                (f"{label}@base", cls, {**kwargs, "source": opts.baseline})
                for label, cls, kwargs in list(kinds)
            ]
        if opts.workers > 1:
            kinds.append(
                ("filterdns-w", servers.Filterdns, {"workers": opts.workers, "snapshot": snapshot})
            )
        kinds += [(p, servers.PEERS[p], {}) for p in opts.peers]
        if opts.workers > 1 and "unbound" in opts.peers:
            kinds.append(("unbound-w", servers.Unbound, {}))
        for label, cls, kwargs in [k for _ in range(opts.repeat) for k in kinds]:
            threads = opts.workers if label.endswith("-w") else 1
            cpus = opts.server_cpus if threads == 1 else None
            server = cls(work, ds, nsd.port, cpus=cpus, threads=threads, **kwargs)  # type: ignore[arg-type]
            startup = server.start()
            try:
                name = label if threads == 1 else f"{label.removesuffix('-w')} x{threads}"
                say(f"{name}: up in {startup:.2f}s")
                servers.probe(server.port)
                # Every name once per worker cache, more or less: each pass sends a name
                # through one of the client sockets, which the kernel maps to one worker.
                for _ in range(1 if threads == 1 else 5):
                    dnsperf(server.port, ds.warm_file, 60, cpus=opts.client_cpus, once=True)
                mixes: list[tuple[str, Path, dict[str, object]]] = [
                    ("mix", ds.mix_file, {}),
                    # The new names must be host names ("filterdns+log" is not one).
                    ("miss", miss_file(work / "data", f"{label.replace('+', '-')}-",
                                       2_000_000), {}),
                    ("p99@10k", ds.mix_file, {"rate": 10_000, "verbose": True}),
                ]
                if opts.mixes:
                    mixes = [m for m in mixes if m[0] in opts.mixes]
                mixes += [(f"mix@{rate}", ds.mix_file, {"rate": rate}) for rate in opts.rates]
                for mix, path, kw in mixes:
                    if opts.smoke and mix == "miss":
                        continue
                    run = measure(server, mix, path, opts.seconds, cpus=opts.client_cpus, **kw)  # type: ignore[arg-type]
                    run.server = name
                    run.extra["startup_s"] = startup
                    runs.append(run)
                    say(_line(run))
                # SIGHUPs under load: the plain set-up, and the rule's (its pools rebuilt).
                key = {"filterdns": "reloads", "filterdns+rule": "reloads_rule"}.get(label)
                if key is not None and opts.reloads and key not in extra:
                    top = next(r.qps for r in runs if r.server == label and r.mix == "mix")
                    extra[key] = reload_run(server, ds, opts, top / 2, say)
            finally:
                server.stop()
    finally:
        nsd.stop()
        rule_nsd.stop()
    all_runs = list(runs)
    if opts.repeat > 1:
        extra["all_runs"] = [asdict(r) for r in runs]
        runs = medians(runs)
    report = {
        "entries": opts.entries,
        "repeat": opts.repeat,
        "seconds": opts.seconds,
        "machine": {"cpus": os.cpu_count()},
        "runs": [asdict(r) for r in runs],
        **extra,
    }
    report["ratios"] = ratios(runs)
    if opts.console and opts.querylog:
        report["console"] = console_ab(all_runs)
        for mix, ab in report["console"].items():  # type: ignore[attr-defined]
            say(f"console {mix}: serving CPU {ab['console_serving_cpu_us']} us/q against "
                f"{ab['log_cpu_us']} with the log alone ({ab['console_minus_log_us']:+} us/q); "
                f"writer {ab['writer_cpu_us_per_row']} us/row; rows written "
                f"{ab['rows_written']} dropped {ab['rows_dropped']} of {ab['answered']}")
    opts.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (opts.results / f"load-{stamp}.json").write_text(json.dumps(report, indent=2))
    say(table(runs))
    plot(runs, opts.results / f"load-{stamp}.png", say)
    say(f"wrote {opts.results}/load-{stamp}.json")
    return report


def run_transport(opts: Options, say: Callable[[str], None] = print) -> dict[str, object]:
    """`--upstream-transport dot`: the miss-heavy mix forwarded to one Unbound (in front of
    NSD) by filterdns over plain UDP, by filterdns over DoT, and by Unbound itself over
    DoT (`forward-tls-upstream`), in one run; returns the report (also written as JSON)."""
    missing = servers.missing_tools(("dnsperf", "nsd", "unbound", "openssl"))
    if missing:
        raise SystemExit("missing tools: " + ", ".join(missing))
    work = opts.results / "work"
    if work.exists():
        shutil.rmtree(work)
    ds = data.make_dataset(work / "data", opts.entries)
    snapshot = work / "data" / "blocklist.snap"
    compile_snapshot(snapshot, f"{ds.domains_file}:adult:domains")
    nsd = servers.Nsd(work, ds, cpus=opts.client_cpus)
    nsd.start()
    runs: list[Run] = []
    try:
        # The DoT upstream shares the client's CPUs, as NSD does in the other runs.
        front = servers.UnboundDot(work, ds, nsd.port, cpus=opts.client_cpus)
        front.start()
        try:
            tls = front.tls
            kinds: list[tuple[str, type[servers.Server], dict[str, object]]] = [
                ("filterdns-udp", servers.Filterdns, {"snapshot": snapshot}),
                ("filterdns-dot", servers.Filterdns, {"snapshot": snapshot, "tls": tls}),
                ("unbound-dot", servers.Unbound, {"tls": tls}),
            ]
            for label, cls, kwargs in [k for _ in range(opts.repeat) for k in kinds]:
                server = cls(work, ds, front.port, cpus=opts.server_cpus, **kwargs)  # type: ignore[arg-type]
                server.name = label
                server.start()
                try:
                    dnsperf(server.port, ds.warm_file, 60, cpus=opts.client_cpus, once=True)
                    tag = f"{label}-{len(runs)}-"
                    misses = miss_file(work / "data", tag, 2_000_000)
                    run = measure(server, "miss", misses, opts.seconds, cpus=opts.client_cpus)
                    runs.append(run)
                    say(_line(run))
                finally:
                    server.stop()
        finally:
            front.stop()
    finally:
        nsd.stop()
    if opts.repeat > 1:
        runs = medians(runs)
    by = {r.server: r for r in runs}
    udp, dot, peer = by["filterdns-udp"], by["filterdns-dot"], by["unbound-dot"]
    report: dict[str, object] = {
        "entries": opts.entries,
        "seconds": opts.seconds,
        "repeat": opts.repeat,
        "runs": [asdict(r) for r in runs],
        "dot_over_udp": dot.qps / udp.qps if udp.qps else math.nan,
        "dot_over_unbound_dot": dot.qps / peer.qps if peer.qps else math.nan,
    }
    opts.results.mkdir(parents=True, exist_ok=True)
    path = opts.results / f"transport-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    say(
        f"filterdns over DoT: {report['dot_over_udp']:.2f}x its UDP rate (target >= 0.6), "
        f"{report['dot_over_unbound_dot']:.2f}x Unbound over DoT (target >= 1)"
    )
    say(f"wrote {path}")
    return report


def medians(runs: list[Run]) -> list[Run]:
    """Per (server, mix), the run with the median of what the mix measures: queries/s,
    or the 99th percentile for a fixed-rate run, where every run has the same rate (the
    machine is shared and noisy: repeated, interleaved runs and their median say more
    than one run)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.server, run.mix), []).append(run)
    out = []
    for group in groups.values():
        if all(r.p99_latency_ms is not None for r in group):
            ordered = sorted(group, key=lambda r: r.p99_latency_ms or 0.0)
        else:
            ordered = sorted(group, key=lambda r: r.qps)
        chosen = ordered[(len(ordered) - 1) // 2]
        chosen.extra["qps_all"] = [round(r.qps) for r in group]
        chosen.extra["cpu_us_all"] = [round(r.cpu_us_per_query, 2) for r in group]
        chosen.extra["p99_ms_all"] = [r.p99_latency_ms for r in group]
        out.append(chosen)
    return out


def reload_run(
    server: servers.Server, ds: data.Dataset, opts: Options, rate: float, say: object
) -> dict[str, object]:
    """dnsperf at `rate` while the server gets `opts.reloads` SIGHUPs: nothing may be lost."""
    seconds = max(opts.seconds, opts.reloads * 1.0 + 2)
    stop = threading.Event()

    def hup() -> None:
        time.sleep(1.0)
        for _ in range(opts.reloads):
            if stop.is_set() or server.proc is None:
                return
            os.kill(server.proc.pid, signal.SIGHUP)
            time.sleep((seconds - 2) / opts.reloads)

    thread = threading.Thread(target=hup, daemon=True)
    thread.start()
    try:
        run = measure(server, "reload", ds.mix_file, seconds, cpus=opts.client_cpus,
                      rate=int(rate))
    finally:
        stop.set()
        thread.join(5)
    result = {"rate": int(rate), "reloads": opts.reloads, "sent": run.sent,
              "completed": run.completed, "lost": run.lost}
    say(f"reloads: {opts.reloads} SIGHUPs at {int(rate)} q/s: {run.lost} lost of {run.sent}")  # type: ignore[operator]
    return result


def _line(run: Run) -> str:
    p99 = f"{run.p99_latency_ms:.3f}" if run.p99_latency_ms is not None else "-"
    hit = f"{run.hit_rate:.3f}" if run.hit_rate is not None else "-"
    return (
        f"  {run.server:<14} {run.mix:<8} {run.qps:>10.0f} q/s  avg {run.avg_latency_ms:.3f} ms"
        f"  p99 {p99} ms  lost {run.lost}  cpu {run.cpu_us_per_query:.2f} us/q"
        f"  rss {run.rss_mb:.0f} MB  hit {hit}"
    )


def ratios(runs: list[Run]) -> dict[str, dict[str, float]]:
    """filterdns/peer for queries/s, CPU per query and p99, per mix."""
    out: dict[str, dict[str, float]] = {}
    ours = {r.mix: r for r in runs if r.server == "filterdns"}
    for run in runs:
        mine = ours.get(run.mix)
        if mine is None or run.server == "filterdns":
            continue
        key = f"{run.mix}:{run.server}"
        out[key] = {"qps": mine.qps / run.qps if run.qps else math.nan}
        if run.cpu_us_per_query:
            out[key]["cpu"] = mine.cpu_us_per_query / run.cpu_us_per_query
        if mine.p99_latency_ms and run.p99_latency_ms:
            out[key]["p99"] = mine.p99_latency_ms / run.p99_latency_ms
    return out


def table(runs: list[Run]) -> str:
    rows = [
        f"{'server':<16}{'mix':<9}{'q/s':>10}{'x ours':>8}{'avg ms':>8}{'p99 ms':>8}"
        f"{'lost':>7}{'us/q':>7}{'x ours':>8}{'RSS MB':>8}{'hit':>7}{'start s':>8}"
    ]
    ours = {r.mix: r for r in runs if r.server == "filterdns"}
    for r in runs:
        mine = ours.get(r.mix)
        qr = f"{mine.qps / r.qps:.2f}" if mine and r.qps else "-"
        cr = (f"{mine.cpu_us_per_query / r.cpu_us_per_query:.2f}"
              if mine and r.cpu_us_per_query else "-")
        p99 = f"{r.p99_latency_ms:.3f}" if r.p99_latency_ms is not None else "-"
        hit = f"{r.hit_rate:.3f}" if r.hit_rate is not None else "-"
        rows.append(
            f"{r.server:<16}{r.mix:<9}{r.qps:>10.0f}{qr:>8}{r.avg_latency_ms:>8.3f}{p99:>8}"
            f"{r.lost:>7}{r.cpu_us_per_query:>7.2f}{cr:>8}{r.rss_mb:>8.0f}{hit:>7}"
            f"{float(r.extra.get('startup_s', 0)):>8.2f}"  # type: ignore[arg-type]
        )
    rows.append("x ours = filterdns / this server (q/s: higher is better; us/q: lower is better)")
    return "\n".join(rows)


def plot(runs: list[Run], path: Path, say: object) -> None:
    """Queries/s and CPU per query per server and mix (needs matplotlib: the bench extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install filterdns[bench])")  # type: ignore[operator]
        return
    mixes = sorted({r.mix for r in runs if r.mix in ("mix", "miss")})
    names = list(dict.fromkeys(r.server for r in runs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(mixes))
    for j, mix in enumerate(mixes):
        by = {r.server: r for r in runs if r.mix == mix}
        xs = [i + j * width for i in range(len(names))]
        axes[0].bar(xs, [by[n].qps if n in by else 0 for n in names], width, label=mix)
        axes[1].bar(xs, [by[n].cpu_us_per_query if n in by else 0 for n in names], width,
                    label=mix)
    for ax, title in zip(axes, ("queries/s", "server CPU µs per answered query"), strict=True):
        ax.set_xticks([i + width * (len(mixes) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=20)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    say(f"wrote {path}")  # type: ignore[operator]

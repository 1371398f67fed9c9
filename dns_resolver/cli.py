"""The `filterdns serve` subcommand: `register(subparsers)` adds it, `run(args)` runs it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from dns_resolver import eventloop
from dns_resolver.reconfigure import ConfigSource
from fdconfig import ConfigError, load_config

log = logging.getLogger("filterdns")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `serve` to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "serve",
        help="run the filtering DNS resolver",
        description=(
            "Run the filtering DNS resolver. Without --config it runs the embedded default: "
            "bundled lists, which serve at once, plus UT1's large categories (adult, "
            "redirector, phishing, malware) downloaded in the background and refreshed daily "
            "(not with --offline); upstreams from /etc/resolv.conf, 127.0.0.1:5353, metrics "
            "on 127.0.0.1:9153, state in $XDG_DATA_HOME/filterdns (~/.local/share/filterdns; "
            "$STATE_DIRECTORY under systemd). Flags override the config file. "
            "Exit status 2 for a bad config or an address that cannot be bound (e.g. in "
            "use). Port 53 needs root or "
            "CAP_NET_BIND_SERVICE (e.g. `setcap cap_net_bind_service=+ep` on the Python "
            "binary, or a systemd unit with AmbientCapabilities=CAP_NET_BIND_SERVICE and "
            "User=filterdns), so the resolver never has to run as root. SIGHUP re-reads the "
            "config file and reloads the lists: a file that does not validate is rejected "
            "(the running configuration stays), keys that need a restart (listen addresses, "
            "workers, the metrics and admin listeners) are logged and kept."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="where state lives: downloaded lists, snapshot, audit trail, query log, reports "
        "(overrides server.data_dir; without --config default $XDG_DATA_HOME/filterdns)",
    )
    parser.add_argument(
        "--offline", action="store_true",
        help="download no list: URL sources serve their copy in the data directory, if any "
        "(config key server.offline)",
    )
    parser.add_argument(
        "--check-config", metavar="FILE", help="validate a config file and exit (status 0 if valid)"
    )
    parser.add_argument(
        "--listen", metavar="ADDR:PORT", action="append", default=[],
        help="listen address, UDP and TCP (repeatable; [v6]:PORT for IPv6)",
    )
    for kind, what in (("tls", "TLS"), ("https", "HTTPS"), ("quic", "QUIC")):
        parser.add_argument(
            f"--listen-{kind}", metavar="ADDR:PORT", action="append", default=[],
            help=f"serve DNS over {what} here (repeatable; replaces server.listen_{kind})",
        )
    parser.add_argument(
        "--tls-cert", metavar="FILE",
        help="PEM certificate chain of the encrypted listeners (tls.cert; with --tls-key)",
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert (tls.key)"
    )
    parser.add_argument(
        "--upstream", metavar="ADDR:PORT", action="append", default=[],
        help="upstream server (repeatable, tried in order); also tls://ADDR[:PORT]#NAME "
        "or https://HOST[:PORT]/PATH",
    )
    parser.add_argument(
        "--list", metavar="PATH[:CATEGORY]", action="append", default=[], dest="lists",
        help="a list to load (repeatable; replaces the config's lists)",
    )
    parser.add_argument(
        "--block-mode", choices=("nxdomain", "nodata", "null", "ip"),
        help="how blocked names are answered",
    )
    parser.add_argument(
        "--metrics-listen", metavar="ADDR:PORT", help='Prometheus endpoint ("" disables)'
    )
    parser.add_argument("--log-format", choices=("text", "json"), help="log line format")
    parser.add_argument(
        "--snapshot", metavar="FILE",
        help="serve the lists of a compiled snapshot (`filterdns compile`) instead of the "
        "config's lists; SIGHUP re-maps the file",
    )
    parser.set_defaults(func=run)
    return parser


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run(args: argparse.Namespace) -> int:
    """Run `filterdns serve`; returns the exit status."""
    if args.check_config:
        try:
            config = load_config(args.check_config)
        except (ConfigError, OSError) as exc:
            print(f"filterdns: invalid config: {exc}", file=sys.stderr)
            return 2
        print(
            f"{args.check_config}: OK ({len(config.lists)} lists, "
            f"{len(config.server.listen)} listen addresses, "
            f"{len(config.upstream.servers)} upstreams)"
        )
        return 0
    source = ConfigSource.from_args(args)
    try:
        config = source.load()
    except (ConfigError, OSError) as exc:
        print(f"filterdns: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, config.logging.format)
    snapshot = getattr(args, "snapshot", None)
    if config.server.workers > 1:
        from dns_resolver import workers

        return workers.serve(config, snapshot, source=source)
    from dns_resolver.app import App

    app = App(config, source=source)
    if snapshot:
        from dns_resolver.workers import snapshot_loader

        app.load_matcher = snapshot_loader(snapshot)
        app.use_reloader = False  # the given file is served as is
    try:
        return eventloop.run(app.run())
    except OSError as exc:
        # An address in use or not ours to bind: one line naming it, no traceback.
        log.error("%s", exc.strerror or exc)
        return 2

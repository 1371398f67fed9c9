"""`filterdns subscribers ...`: bulk import and look-ups, straight on the database.

    filterdns subscribers import FILE --config FILE   # JSON lines or .csv, with a progress bar
    filterdns subscribers show ID|ADDRESS --config FILE

A running server picks an import up from the change log (within `poll_interval`, at once on
PostgreSQL). The import is audited in `<data_dir>/audit.jsonl` with the user who ran it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from typing import Any

EXIT_OK, EXIT_ERROR = 0, 2
BATCH = 5000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "subscribers",
        help="import and look up subscribers (docs/subscribers.md)",
        description="Subscribers of [subscribers]: bulk import and look-ups.",
    )
    sub = parser.add_subparsers(dest="subscribers_command", required=True)
    imp = sub.add_parser(
        "import",
        help="create or replace subscribers from a JSON-lines or CSV file",
        description='Each line a subscriber: JSON lines {"id", "policy", "addresses", '
        '"allow_domains", "block_domains"}, or CSV (a .csv file) with a header naming '
        "those columns (lists separated by spaces or ';'). A line that is not valid stops "
        "the import with its line number; the rows before it stay imported.",
    )
    imp.add_argument("file", metavar="FILE", help="the file (- reads standard input)")
    imp.add_argument("--format", choices=("jsonl", "csv"), help="default: by the file's name")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    _location(imp)
    imp.set_defaults(func=cmd_import)
    show = sub.add_parser(
        "show",
        help="a subscriber by id, or who holds an address and the policy it gets",
    )
    show.add_argument("what", metavar="ID|ADDRESS")
    _location(show)
    show.set_defaults(func=cmd_show)


def _location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", required=True, help="the filterdns config")
    parser.add_argument("--data-dir", metavar="DIR", help="the data directory (overrides)")


def _open(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from fdconfig import COMMAND_LINE, ConfigError, load_config
    from listsync.update import config_data_dir
    from subscribers.store import SubscriberStore, database_url

    config = load_config(args.config, data_dir=args.data_dir)
    if not config.policy.enabled:
        raise ConfigError(COMMAND_LINE, "--config", "[subscribers] needs [policies]")
    data_dir = config_data_dir(config)
    names = [p.name for p in config.policy.policies]
    return SubscriberStore(database_url(config, data_dir)), data_dir, names


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from listsync.audit import AuditLog
    from reports.service import AUDIT_NAME
    from subscribers.imports import ImportError_, kind_of, parse_lines

    store, data_dir, names = _open(args)
    parser = parse_lines(args.format or kind_of(args.file), names)
    who = f"cli ({getpass.getuser()}@{socket.gethostname()})"
    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    size = os.fstat(stream.fileno()).st_size if args.file != "-" else None
    count = 0
    try:
        with (
            stream,
            tqdm(total=size, unit="B", unit_scale=True, disable=args.quiet, desc="import") as bar,
        ):
            batch = []
            for line in stream:
                bar.update(len(line.encode()))
                sub = parser.feed(line)
                if sub is not None:
                    batch.append(sub)
                if len(batch) >= BATCH:
                    count += store.import_batch(batch, who)
                    batch = []
                    bar.set_postfix(rows=count)
            if batch:
                count += store.import_batch(batch, who)
    except ImportError_ as exc:
        print(
            f"filterdns: error: {args.file}: {exc} ({count} rows before it were imported)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except OSError as exc:
        print(f"filterdns: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if count:
            AuditLog(data_dir / AUDIT_NAME).append(
                {
                    "kind": "subscriber",
                    "action": "import",
                    "rows": count,
                    "by": who,
                    "file": os.path.abspath(args.file) if args.file != "-" else "-",
                }
            )
        store.close()
    print(f"{count} subscribers imported", file=sys.stderr)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from reports.store import NotFound
    from subscribers.addresses import containing

    store, _data_dir, _names = _open(args)
    try:
        try:
            candidates = containing(args.what)
        except ValueError:
            try:
                out: dict[str, Any] = store.get(args.what)
            except NotFound as exc:
                print(f"filterdns: error: {exc}", file=sys.stderr)
                return EXIT_ERROR
        else:
            found = store.holder(candidates)
            if found is None:
                out = {"address": args.what, "subscriber": None}
            else:
                out = {
                    "address": args.what,
                    "matched": found[0],
                    "subscriber": found[1],
                    "policy": found[1]["policy"],
                }
    finally:
        store.close()
    print(json.dumps(out, indent=2))
    return EXIT_OK

"""`filterdns admin ...`: API tokens, the audit export and a stand-alone admin API.

    filterdns admin token create --role reviewer --data-dir DIR   # prints the token once
    filterdns admin token list --data-dir DIR
    filterdns admin token revoke ID --data-dir DIR
    filterdns admin audit export --format csv --data-dir DIR [--since T] [--kind K]
    filterdns admin serve --config FILE [--listen ADDR:PORT]

The database is the config's `[reports] database` (with `--config`), else SQLite in the
data directory (`--data-dir`, or the config's `server.data_dir`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from reports.vocabulary import NAME_LEN, ROLES

EXIT_OK, EXIT_ERROR = 0, 2


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="the filterdns TOML config")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="the data directory (overrides the config's)"
    )


def _config_and_dir(args: argparse.Namespace) -> tuple[Any, Path]:
    """The config (or the defaults) and the data directory the command works on."""
    from fdconfig import COMMAND_LINE, ConfigError, load_config
    from listsync.update import config_data_dir

    if args.config:
        config = load_config(args.config)
    elif args.data_dir:
        from fdconfig import Config

        config = Config()
    else:
        raise ConfigError(COMMAND_LINE, "--data-dir", "give --data-dir DIR or --config FILE")
    data_dir = Path(args.data_dir) if args.data_dir else config_data_dir(config)
    return config, data_dir


def _store(args: argparse.Namespace) -> Any:
    from reports.store import Store, database_url

    config, data_dir = _config_and_dir(args)
    return Store(database_url(config, data_dir))


def cmd_token_create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        token_id, token = store.create_token(args.role, args.name)
    finally:
        store.close()
    print(token)
    print(
        f"token {token_id} ({args.role}, {args.name!r}) created; it is shown only now",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        rows = store.tokens()
    finally:
        store.close()
    print(f"{'id':>4}  {'role':9} {'created':21} {'revoked':21} name")
    for row in rows:
        print(
            f"{row['id']:>4}  {row['role']:9} {row['created_at']:21} "
            f"{row['revoked_at'] or '-':21} {row['name']}"
        )
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from reports.store import NotFound

    store = _store(args)
    try:
        store.revoke_token(args.id)
    except NotFound as exc:
        print(f"filterdns: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        store.close()
    print(f"token {args.id} revoked")
    return EXIT_OK


def cmd_audit_export(args: argparse.Namespace) -> int:
    from listsync.update import audit_log
    from reports.export import export_audit

    _, data_dir = _config_and_dir(args)
    try:
        records = audit_log(data_dir).read(since=args.since, kind=args.kind)
    except ValueError as exc:
        print(f"filterdns: error: --since: {exc}", file=sys.stderr)
        return EXIT_ERROR
    text = export_audit(records, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from dns_resolver.cli import setup_logging
    from fdconfig import COMMAND_LINE, ConfigError, parse_address
    from reports.server import serve_forever

    config, data_dir = _config_and_dir(args)
    if args.listen:
        try:
            listen = parse_address(args.listen)
        except ValueError as exc:
            raise ConfigError(COMMAND_LINE, "--listen", str(exc)) from None
        config = replace(config, admin=replace(config.admin, listen=listen))
    setup_logging(config.logging.level, config.logging.format)
    return asyncio.run(serve_forever(config, str(data_dir)))


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `admin` and its subcommands to the `filterdns` parser."""
    admin = subparsers.add_parser(
        "admin",
        help="API tokens, audit export, the admin API",
        description="Manage the report queue's API tokens, export the audit trail, or "
        "run the admin API on its own. See docs/reports-api.md.",
    )
    sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)

    token = sub.add_parser("token", help="create, list and revoke API tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = token_sub.add_parser(
        "create",
        help="create a token and print it (once)",
        description="Create an API token and print it on stdout. Only its SHA-256 is "
        "stored: it cannot be shown again.",
    )
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument(
        "--name",
        default="reviewer",
        type=lambda text: text[:NAME_LEN],
        help="who holds it (shown in the audit trail)",
    )
    _add_location(create)
    create.set_defaults(func=cmd_token_create)
    listing = token_sub.add_parser("list", help="list tokens (never the tokens themselves)")
    _add_location(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id", type=int)
    _add_location(revoke)
    revoke.set_defaults(func=cmd_token_revoke)

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    export = audit_sub.add_parser(
        "export",
        help="export the audit trail as CSV or JSON",
        description="Every list update, review decision and override change, for a "
        "regulator or a hotline.",
    )
    export.add_argument("--format", choices=("csv", "json"), default="json")
    export.add_argument("--since", help="only records at or after this ISO 8601 time")
    export.add_argument("--kind", help="only records of this kind (e.g. review-decision)")
    export.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")
    _add_location(export)
    export.set_defaults(func=cmd_audit_export)

    serve = sub.add_parser(
        "serve",
        help="run the admin API alone (no DNS)",
        description="Serve the admin API and review page without the resolver: verdicts "
        "then show the overrides only. `filterdns serve` runs it in-process when "
        "[admin] enabled = true.",
    )
    _add_location(serve)
    serve.add_argument("--listen", metavar="ADDR:PORT", help="replaces admin.listen")
    serve.set_defaults(func=cmd_serve)
    return admin

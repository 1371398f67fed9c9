"""`filterdns config schema | show | docs`: the configuration file's JSON Schema, the
effective configuration, and docs/configuration.md's generated key tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fdconfig.config import Config
from fdconfig.load import default_config, load_config
from fdconfig.schema import render_docs, schema_text
from fdconfig.show import show


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `config` to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "config",
        help="the configuration file: its JSON Schema, the effective values",
        description="Inspect the configuration file of `filterdns serve`.",
    )
    sub = parser.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of the configuration file",
        description="Print the JSON Schema of the configuration file (descriptions and "
        "defaults of every key). Editors that read a `#:schema FILE` comment at the top of "
        "a TOML file (Taplo, Even Better TOML) complete and check keys with it.",
    )
    schema.set_defaults(func=cmd_schema)
    show_ = sub.add_parser(
        "show",
        help="print the effective configuration as TOML",
        description="Load the configuration (--config FILE, or the embedded default) and print "
        "every key with the value in force, defaults filled in, as TOML.",
    )
    show_.add_argument("--config", metavar="FILE", help="TOML config file")
    show_.add_argument(
        "--data-dir", metavar="DIR", help="the data directory (overrides server.data_dir)"
    )
    show_.set_defaults(func=cmd_show)
    docs = sub.add_parser(
        "docs",
        help="regenerate the key tables of docs/configuration.md",
        description="Rewrite the key tables of a configuration reference (the tables after "
        "each `<!-- keys: SECTION -->` marker) from the schema's descriptions and defaults.",
    )
    docs.add_argument("file", metavar="FILE", help="the Markdown file, e.g. docs/configuration.md")
    docs.add_argument(
        "--check", action="store_true", help="only report whether FILE is up to date (status 1)"
    )
    docs.set_defaults(func=cmd_docs)
    return parser


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def load_base(args: argparse.Namespace) -> Config:
    """`--config FILE` (without it the embedded default) with `--data-dir` and `--offline`
    applied, for every command that reads the configuration (serve, config show, lists,
    doctor), so they agree on where state lives."""
    data_dir = getattr(args, "data_dir", None)
    offline = bool(getattr(args, "offline", False))
    if args.config:
        return load_config(args.config, data_dir=data_dir, offline=offline)
    return default_config(data_dir=data_dir, offline=offline)


def cmd_show(args: argparse.Namespace) -> int:
    sys.stdout.write(show(load_base(args)))
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    path = Path(args.file)
    text = path.read_text(encoding="utf-8")
    new = render_docs(text)
    if args.check:
        if new != text:
            print(f"{path}: the key tables differ from the schema", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0

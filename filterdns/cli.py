"""The `filterdns` command: serve, check names and URLs, inspect lists."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from fdconfig import ConfigError
from filtercore import FilterError, ListSpec, Matcher, Verdict
from filtercore.matcher import parse_target
from filterdns import __version__

EXIT_OK, EXIT_BLOCKED, EXIT_ERROR = 0, 1, 2


def _add_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--list",
        dest="lists",
        action="append",
        default=[],
        metavar="PATH[:CATEGORY[:FORMAT]]",
        help="a list to load (repeatable); FORMAT defaults to auto. Without --list or "
        "--config: what `filterdns serve` without a config blocks (the bundled lists, plus "
        "the categories it has downloaded into its data directory; nothing is downloaded "
        "here)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="load the lists of a filterdns TOML config"
    )
    parser.add_argument(
        "--snapshot", metavar="FILE", help="load a compiled snapshot (from `filterdns compile`)"
    )


def _specs(args: argparse.Namespace) -> list[ListSpec]:
    """The lists named by --list, else by --config, else the embedded default's: the
    bundled lists and the copies of its URL sources already downloaded."""
    from fdconfig import default_config, load_config
    from listsync.update import available_specs

    if args.lists:
        return [ListSpec.parse(text) for text in args.lists]
    if args.config:
        return load_config(args.config).list_specs()
    return available_specs(default_config(offline=True))  # never download from here


def _describe(target: str, verdict: Verdict) -> str:
    if verdict.action.value == "none":
        return f"{target}: none (no rule matched)"
    where = f"{verdict.source}:{verdict.line}" if verdict.line else verdict.source
    kind = verdict.kind.value if verdict.kind else "rule"
    return (
        f"{target}: {verdict.action.value} (category {verdict.category}, list {verdict.list}, "
        f"{kind} {verdict.rule!r} at {where}, matched {verdict.matched!r})"
    )


def _matcher(args: argparse.Namespace) -> Matcher:
    if getattr(args, "snapshot", None):
        return Matcher.from_snapshot(args.snapshot)
    if not args.lists and not args.config:
        return default_matcher()
    return Matcher.from_lists(_specs(args))


def default_matcher() -> Matcher:
    """What `filterdns serve` without a config blocks now: its snapshot in the data
    directory when that is current (it holds the downloaded categories; mapping it takes
    milliseconds), else the bundled lists and whatever copies were downloaded."""
    from fdconfig import default_config
    from listsync.update import (
        available_specs,
        config_data_dir,
        snapshot_is_current,
        snapshot_path,
    )

    config = default_config(offline=True)  # never download from here
    data_dir = config_data_dir(config)
    if snapshot_is_current(config, data_dir):
        return Matcher.from_snapshot(str(snapshot_path(data_dir)))
    return Matcher.from_lists(available_specs(config))


def cmd_check(args: argparse.Namespace) -> int:
    matcher = _matcher(args)
    status = EXIT_OK
    for target in args.targets:
        try:
            text, is_url = parse_target(target)
            verdict = matcher.check_url(text) if is_url else matcher.check(text)
        except FilterError as exc:
            status = EXIT_ERROR
            if args.json:
                print(json.dumps({"input": target, "error": str(exc)}))
            else:
                print(f"{target}: error: {exc}", file=sys.stderr)
            continue
        if verdict.blocked and status == EXIT_OK:
            status = EXIT_BLOCKED
        if args.json:
            print(json.dumps({"input": target, **verdict.as_dict()}))
        else:
            print(_describe(target, verdict))
    return status


def cmd_compile(args: argparse.Namespace) -> int:
    specs = _specs(args)
    start = time.perf_counter()
    matcher = Matcher.from_lists(specs)
    compiled = time.perf_counter() - start
    matcher.save_snapshot(args.output, meta={"lists": [spec.path for spec in specs]})
    # Verify what was written before anyone maps it.
    Matcher.from_snapshot(args.output, verify=True)
    stats = matcher.stats()
    print(
        f"{args.output}: {stats['entries']:,} entries from {len(specs)} lists, "
        f"{os.path.getsize(args.output):,} bytes, compiled in {compiled:.2f} s, "
        f"{stats['problems']} malformed lines (see `filterdns lists stats`)"
    )
    return EXIT_OK


def cmd_lists_stats(args: argparse.Namespace) -> int:
    matcher = _matcher(args)
    stats = matcher.stats()
    problems = matcher.problems
    if args.json:
        print(json.dumps({**stats, "malformed": [p._asdict() for p in problems]}, indent=2))
        return EXIT_OK
    print(f"{'list':40} {'category':18} {'action':6} {'entries':>10}")
    for row in stats["lists"]:  # type: ignore[union-attr]
        print(f"{row['list']:40} {row['category']:18} {row['action']:6} {row['entries']:>10,}")
    print()
    print(f"{'category':18} {'entries':>10}")
    for category, count in sorted(stats["categories"].items()):  # type: ignore[union-attr]
        print(f"{category:18} {count:>10,}")
    print()
    print(
        f"{stats['entries']:,} entries, {stats['table_keys']:,} table keys, "
        f"{stats['table_bytes']:,} table bytes, {stats['side_bytes']:,} side-table bytes"
    )
    print(f"{len(problems)} malformed or unsupported lines")
    shown = problems if args.all_problems else problems[:20]
    for problem in shown:
        print(f"  {problem}")
    if len(shown) < len(problems):
        print(f"  ... and {len(problems) - len(shown)} more (--all-problems to show them)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filterdns",
        description="A transparent filtering DNS resolver and domain/URL matcher.",
    )
    parser.add_argument("--version", action="version", version=f"filterdns {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser(
        "check",
        help="print the verdict for names or URLs",
        description="Print the verdict for each NAME or URL and the rule that decided it. "
        "Exit status: 0 when nothing is blocked, 1 when something is, 2 on an error.",
    )
    check.add_argument("targets", nargs="+", metavar="NAME|URL")
    _add_list_options(check)
    check.add_argument("--json", action="store_true", help="one JSON object a line")
    check.set_defaults(func=cmd_check)

    compile_ = sub.add_parser(
        "compile",
        help="compile lists into a snapshot file",
        description="Parse and compile every list (of --config, --list, or the embedded "
        "default's) into one snapshot file that the resolver maps without parsing text. "
        "The file is written atomically and verified.",
    )
    _add_list_options(compile_)
    compile_.add_argument("-o", "--output", required=True, metavar="SNAPSHOT")
    compile_.set_defaults(func=cmd_compile)

    lists = sub.add_parser("lists", help="inspect lists", description="Inspect lists.")
    lists_sub = lists.add_subparsers(dest="lists_command", metavar="COMMAND", required=True)
    stats = lists_sub.add_parser(
        "stats",
        help="entries per list and category, and the malformed lines",
        description="Compile the lists and print entries per list and per category, table "
        "sizes, and every malformed or unsupported line with its file and line number.",
    )
    _add_list_options(stats)
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--all-problems", action="store_true", help="print every malformed line")
    stats.set_defaults(func=cmd_lists_stats)
    from listsync.cli import register_lists_commands

    register_lists_commands(lists_sub)

    from dns_resolver.cli import register as register_serve

    register_serve(sub)
    __import__("fdconfig.cli").cli.register(sub)
    __import__("filterdns.squid_helper").squid_helper.register(sub)
    __import__("filterdns.doctor").doctor.register(sub)
    __import__("filterdns.device_profile").device_profile.register(sub)
    __import__("reports.cli").cli.register(sub)
    __import__("subscribers.cli").cli.register(sub)
    __import__("benchmarks.load.cli").load.cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (FilterError, ConfigError) as exc:
        print(f"filterdns: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

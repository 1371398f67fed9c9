"""`filterdns lists update | history | diff`: refresh sources, read the audit trail, preview.

`filterdns/cli.py` owns the `lists` command group and calls `register_lists_commands` with
its sub-parsers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from listsync.update import (
    SNAPSHOT_RECORD,
    Progress,
    SourceResult,
    UpdateReport,
    audit_log,
    config_data_dir,
    diff_source,
    update_sources,
    url_sources,
)

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR = 0, 1, 2


def register_lists_commands(lists_sub: Any) -> None:
    """Add `update`, `history` and `diff` to the `filterdns lists` sub-parsers."""
    update = lists_sub.add_parser(
        "update",
        help="download list sources now and recompile the snapshot",
        description="Fetch every list source given by URL (conditionally: an unchanged "
        "list is not downloaded again), reject truncated, corrupt or shrunken downloads, "
        "and compile all configured lists into <data_dir>/lists.snap if any changed. "
        "Exit status: 0 when every source is fine, 1 when one was rejected or unreachable, "
        "2 on an error.",
    )
    _config_options(update)
    update.add_argument(
        "--force", action="store_true", help="recompile even if no list has changed"
    )
    update.add_argument(
        "--offline", action="store_true",
        help="download nothing: compile from the copies already in the data directory",
    )
    update.add_argument("--json", action="store_true", help="print the results as JSON")
    update.set_defaults(func=cmd_lists_update)

    history = lists_sub.add_parser(
        "history",
        help="show the audit trail of list changes",
        description="Print the audit log (<data_dir>/audit.jsonl): every update of every "
        "source, applied, rejected (and why) or unchanged, with versions and entry counts.",
    )
    _config_options(history, need_config=False)
    history.add_argument("--since", metavar="TIME", help="only records at or after TIME (ISO)")
    history.add_argument("--source", metavar="NAME", help="only records of this source")
    history.add_argument("--json", action="store_true", help="one JSON record a line")
    history.set_defaults(func=cmd_lists_history)

    diff = lists_sub.add_parser(
        "diff",
        help="show what a pending update would add and remove",
        description="Download the current version of URL sources (all, or SOURCE) and "
        "print the entries it would add (+) and remove (-), without applying it.",
    )
    _config_options(diff)
    diff.add_argument("sources", nargs="*", metavar="SOURCE", help="source names (default all)")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(func=cmd_lists_diff)


def _config_options(parser: argparse.ArgumentParser, need_config: bool = True) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the filterdns TOML config"
        + ("" if need_config else " (only to find server.data_dir)"),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where sources, the snapshot and the audit log live (default: server.data_dir)",
    )


def _load(args: argparse.Namespace) -> tuple[Any, Path]:
    """The config (the embedded default without --config; --data-dir and --offline
    applied as `filterdns serve` applies them) and the data directory."""
    from fdconfig.cli import load_base

    config = load_base(args)
    return config, config_data_dir(config)


class _Bars(Progress):
    """tqdm bars on stderr: one per download, one for compilation; off when not a TTY."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def _bar(self, key: str, **kwargs: Any) -> Any:
        from tqdm import tqdm

        bar = self.bars.get(key)
        if bar is None:
            bar = tqdm(file=sys.stderr, leave=False, dynamic_ncols=True, **kwargs)
            self.bars[key] = bar
        return bar

    def download(self, source: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        bar = self._bar(source, desc=source, unit="B", unit_scale=True, total=total)
        bar.update(done - bar.n)

    def source_done(self, result: SourceResult) -> None:
        bar = self.bars.pop(result.source, None)
        if bar is not None:
            bar.close()

    def stage(self, name: str, step: int, steps: int) -> None:
        if not self.enabled:
            return
        bar = self._bar("compile", desc="compile", total=steps, unit="step")
        bar.set_postfix_str(name)
        bar.update(step - 1 - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _result_line(result: SourceResult) -> str:
    entries = f"{result.entries:,} entries" if result.entries is not None else "no copy"
    change = f", +{result.added:,} -{result.removed:,}" if result.status == "fetched" else ""
    why = f": {result.reason}" if result.reason and result.status != "not-modified" else ""
    return f"  {result.source:24} {result.status:13} {entries}{change}{why}"


def _report_dict(report: UpdateReport) -> dict[str, Any]:
    return {
        "sources": [{**vars(r), "result": r.result} for r in report.sources],
        "snapshot": str(report.snapshot) if report.snapshot else None,
        "compiled": report.compiled,
        "entries": report.entries,
        "compile_seconds": round(report.compile_seconds, 3),
        "error": report.error,
    }


def cmd_lists_update(args: argparse.Namespace) -> int:
    config, data_dir = _load(args)
    bars = _Bars(enabled=sys.stderr.isatty() and not args.json)
    try:
        report = update_sources(config, data_dir, force_compile=args.force, progress=bars)
    finally:
        bars.close()
    problem = any(r.result == "rejected" for r in report.sources)
    if args.json:
        print(json.dumps(_report_dict(report), indent=2))
    else:
        if report.sources:
            print("sources:")
            for result in report.sources:
                print(_result_line(result))
        if report.error:
            print(f"compile failed, the previous snapshot stays in force: {report.error}")
        elif report.compiled:
            print(
                f"{report.snapshot}: compiled {report.entries:,} entries "
                f"in {report.compile_seconds:.2f} s"
            )
        elif report.snapshot:
            print(f"{report.snapshot}: up to date ({report.entries:,} entries)")
    if report.error:
        return EXIT_ERROR
    return EXIT_PROBLEM if problem else EXIT_OK


def _history_line(record: dict[str, Any]) -> str:
    when = record.get("time", "?")
    kind = record.get("kind")
    if kind == SNAPSHOT_RECORD:
        return f"{when}  snapshot  {record.get('entries', 0):,} entries compiled"
    if kind != "list-update":
        detail = {k: v for k, v in record.items() if k not in ("time", "kind")}
        return f"{when}  {kind}  {json.dumps(detail)}"
    old = record.get("old") or {}
    new = record.get("new") or {}

    def version(v: dict[str, Any]) -> str:
        if not v:
            return "-"
        sha = (v.get("sha256") or "")[:12]
        entries = v.get("entries")
        count = f" {entries:,}" if isinstance(entries, int) else ""
        return f"{sha}{count}"

    text = f"{when}  {record.get('source')}  {record.get('result')}"
    if record.get("status") and record.get("status") != record.get("result"):
        text += f" ({record['status']})"
    if record.get("result") == "applied":
        text += f"  {version(old)} -> {version(new)}  +{record.get('added', 0):,} "
        text += f"-{record.get('removed', 0):,}"
    if record.get("reason"):
        text += f"  {record['reason']}"
    return text


def cmd_lists_history(args: argparse.Namespace) -> int:
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        _config, data_dir = _load(args)
    records = audit_log(data_dir).read(since=args.since)
    if args.source:
        records = [r for r in records if r.get("source") == args.source]
    for record in records:
        print(json.dumps(record) if args.json else _history_line(record))
    if not records and not args.json:
        print(f"no audit records in {data_dir}", file=sys.stderr)
    return EXIT_OK


def cmd_lists_diff(args: argparse.Namespace) -> int:
    config, data_dir = _load(args)
    if not url_sources(config):
        print("no list is given by URL: nothing to diff", file=sys.stderr)
        return EXIT_OK
    try:
        diffs = diff_source(config, data_dir, args.sources or None)
    except KeyError as exc:
        print(f"filterdns: error: not a list source given by URL: {exc.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps([vars(d) for d in diffs], indent=2))
    else:
        for diff in diffs:
            if diff.status != "fetched":
                print(f"{diff.source}: {diff.status}" + (f": {diff.reason}" if diff.reason else ""))
                continue
            print(f"{diff.source}: +{len(diff.added):,} -{len(diff.removed):,}")
            for key in diff.added:
                print(f"+ {key}")
            for key in diff.removed:
                print(f"- {key}")
    return EXIT_PROBLEM if any(d.status == "rejected" for d in diffs) else EXIT_OK

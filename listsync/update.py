"""Refreshing list sources and compiling the snapshot the resolver serves from.

`update_sources` is the one entry point (the CLI's `lists update` and the reloader's child
process both call it):

1. For each URL source (all, or the ones due): a conditional GET into
   `<data_dir>/sources/<name>/incoming/`, then validation: the download must be complete
   and parse (`filtercore.formats.parse_list`, the same reader the compiler uses), and must
   not shrink the list by more than `max_shrink` against the last good version. A good
   download replaces the cached copy; anything else leaves the last good copy in force. An
   unreachable source falls back to its cached copy. Every outcome is audited.
2. If any list changed (a source applied, a local list edited, the configured lists
   changed, or no usable snapshot exists), every configured list is compiled into
   `<data_dir>/lists.snap`: written to a temporary file, verified (`load_snapshot(verify=
   True)`, a full checksum pass), then renamed into place, so a reader maps either the old
   or the new file, never a partial one.

Runs are serialised with an advisory lock on `<data_dir>/.update.lock`, so a hand-run
`filterdns lists update` and the resolver's reloader never write the same files at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filtercore.compiler import compile_lists
from filtercore.entries import Entry, ParsedList, Scope
from filtercore.errors import FilterError
from filtercore.formats import parse_list
from filtercore.listspec import ListSpec
from filtercore.snapshot import SnapshotError, load_snapshot, write_snapshot
from filtercore.verdict import Action
from listsync.audit import LIST_UPDATE, AuditLog
from listsync.fetch import Download, FetchError, SourceMeta, download
from listsync.sources import AUDIT_NAME, INCOMING_DIR, META_NAME, SNAPSHOT_NAME

if TYPE_CHECKING:
    from fdconfig import Config, ListConfig

log = logging.getLogger(__name__)

SNAPSHOT_RECORD = "snapshot"
"""The audit kind of a record written when a new snapshot goes into service."""

# SourceResult.status values.
FETCHED = "fetched"  # a new version was downloaded, validated and applied
UNCHANGED = "unchanged"  # downloaded, but identical to the cached copy
NOT_MODIFIED = "not-modified"  # the server answered 304
FALLBACK = "fallback"  # the source is unreachable; its cached copy stays in force
REJECTED = "rejected"  # a download came back but failed validation; last good kept
UNAVAILABLE = "unavailable"  # unreachable and never fetched: the list is left out
CACHED = "cached"  # not due for a refresh; the cached copy was used as is
PENDING = "pending"  # not fetched in this run and no copy yet: left out until it is
NOT_TRIED = (CACHED, PENDING)  # statuses of sources this run did not download


class Progress:
    """Progress reports of an update; the default does nothing (the CLI draws bars)."""

    def download(self, source: str, done: int, total: int | None) -> None:
        """Bytes of `source` received so far, and the announced total if known."""

    def source_done(self, result: SourceResult) -> None:
        """One source has been handled."""

    def stage(self, name: str, step: int, steps: int) -> None:
        """Compilation stages: `step` of `steps` (parse and compile, write, verify)."""


class LogProgress(Progress):
    """Logs one line when a download starts, with its size when the server announces it
    (the resolver's background updates: the log says what is on its way)."""

    def __init__(self) -> None:
        self.started: set[str] = set()

    def download(self, source: str, done: int, total: int | None) -> None:
        if source in self.started:
            return
        self.started.add(source)
        if total is None:
            size = "size unknown"
        elif total >= 1_000_000:
            size = f"{total / 1e6:,.1f} MB"
        else:
            size = f"{total / 1e3:,.0f} kB"
        log.info("%s: downloading %s...", source, size)


@dataclass
class SourceResult:
    """What happened to one URL source in one update.

    `result` is the coarse outcome for metrics and the audit trail: `applied`, `unchanged`
    or `rejected` (fallback, rejected and unavailable are all rejected downloads).
    `entries` is the entry count of the copy in force afterwards (None: no copy).
    """

    source: str
    url: str
    status: str
    reason: str | None = None
    entries: int | None = None
    added: int = 0
    removed: int = 0
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None

    @property
    def result(self) -> str:
        if self.status == FETCHED:
            return "applied"
        if self.status in (UNCHANGED, NOT_MODIFIED, CACHED, PENDING):
            return "unchanged"
        return "rejected"


@dataclass
class UpdateReport:
    """The outcome of `update_sources`.

    `snapshot` is the snapshot in force afterwards (None if none could be built);
    `compiled` says whether a new one was written by this run; `error` explains a failed
    compilation (the previous snapshot then stays in force).
    """

    sources: list[SourceResult] = field(default_factory=list)
    snapshot: Path | None = None
    compiled: bool = False
    entries: int = 0
    compile_seconds: float = 0.0
    error: str | None = None


@dataclass
class SourceDiff:
    """What a pending update of one source would change (`filterdns lists diff`)."""

    source: str
    status: str  # FETCHED (a new version is pending), NOT_MODIFIED, UNCHANGED, or an error
    reason: str | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


# --- where things are -----------------------------------------------------------------


def config_data_dir(config: Config) -> Path:
    """`server.data_dir` resolved as the config loader does: relative to the config file's
    folder; empty means that folder (the embedded default's is absolute:
    `fdconfig.default_data_dir()`)."""
    base = Path(config.source).resolve().parent if config.source else Path.cwd()
    return base / config.server.data_dir if config.server.data_dir else base


def snapshot_path(data_dir: str | os.PathLike[str]) -> Path:
    """The compiled snapshot of all lists: what the resolver maps."""
    return Path(data_dir) / SNAPSHOT_NAME


def audit_log(data_dir: str | os.PathLike[str]) -> AuditLog:
    """The audit trail of this data directory."""
    return AuditLog(Path(data_dir) / AUDIT_NAME)


def url_sources(config: Config) -> list[ListConfig]:
    """The lists of `config` that are downloaded."""
    return [lc for lc in config.lists if lc.url]


def due_at(lc: ListConfig) -> float:
    """The Unix time a URL source is next due for a refresh (0: now, never fetched)."""
    meta = SourceMeta.load(Path(lc.path).parent)
    if meta is None or meta.url != lc.url or not Path(lc.path).exists():
        return 0.0
    return meta.checked_at + lc.refresh


@contextlib.contextmanager
def _update_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".update.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- entries ----------------------------------------------------------------------------


def entry_key(entry: Entry) -> str:
    """An entry as `lists diff` shows it: `[category:][@@][*.]value`.

    Values are normalised by the parsers (lower case, A-labels), so two versions of a list
    compare by what they match, not by how they were written.
    """
    text = entry.value
    if entry.scope == Scope.BELOW:
        text = f"*.{text}"
    if entry.action is Action.ALLOW:
        text = f"@@{text}"
    return f"{entry.category}:{text}" if entry.category else text


def entry_keys(parsed: ParsedList) -> set[str]:
    """The normalised entry set of a parsed list."""
    return {entry_key(entry) for entry in parsed.entries}


def _parse(path: Path, fmt: str) -> ParsedList:
    return parse_list(str(path), fmt)


# --- one source -------------------------------------------------------------------------


def refresh_source(
    lc: ListConfig, audit: AuditLog, progress: Progress | None = None
) -> SourceResult:
    """Fetch one URL source, validate it, apply it or keep the last good copy; audit it."""
    assert lc.url is not None
    name = lc.name or ""
    body = Path(lc.path)
    folder = body.parent
    meta = SourceMeta.load(folder) if body.exists() else None
    if body.exists() and meta is None:
        # A copy without meta (meta.json lost): keep it as the last good version.
        meta = _meta_for_existing(lc, body)
    incoming = folder / INCOMING_DIR / body.name
    old_version = meta.version() if meta else None

    def report(bytes_done: int, total: int | None) -> None:
        if progress is not None:
            progress.download(name, bytes_done, total)

    result = SourceResult(name, lc.url, status=REJECTED, old=old_version)
    etag, last_modified = _validators(lc, meta)
    try:
        got = download(
            lc.url,
            incoming,
            etag=etag,
            last_modified=last_modified,
            max_bytes=lc.max_bytes,
            timeout=lc.timeout,
            progress=report,
        )
        if got.not_modified:
            assert meta is not None  # validators are only sent when a copy exists
            meta.checked_at = time.time()
            meta.save(folder)
            result.status, result.reason, result.new = NOT_MODIFIED, "not modified (304)", None
        else:
            _apply_download(lc, got, meta, result)
    except FetchError as exc:
        if exc.unreachable:
            result.status = FALLBACK if meta else UNAVAILABLE
            kept = "kept the cached copy" if meta else "no cached copy: list left out"
            result.reason = f"{exc.reason}; {kept}"
        else:
            result.status, result.reason = REJECTED, f"{exc.reason}; kept the last good version"
    finally:
        shutil.rmtree(folder / INCOMING_DIR, ignore_errors=True)
    current = SourceMeta.load(folder) if body.exists() else None
    result.entries = current.entries if current else None
    level = logging.WARNING if result.result == "rejected" else logging.INFO
    log.log(level, "list source %s: %s (%s)", name, result.status, result.reason or "ok")
    try:
        audit.append(
            {
                "kind": LIST_UPDATE,
                "source": name,
                "url": lc.url,
                "result": result.result,
                "status": result.status,
                "reason": result.reason,
                "old": result.old,
                "new": result.new,
                "added": result.added,
                "removed": result.removed,
            }
        )
    except OSError as exc:
        log.error("cannot write the audit log %s: %s", audit.path, exc)
    if progress is not None:
        progress.source_done(result)
    return result


def _validators(lc: ListConfig, meta: SourceMeta | None) -> tuple[str | None, str | None]:
    """The ETag and Last-Modified of the cached copy, if it came from this URL (after the
    URL of a source is changed, its old ETag means nothing to the new server)."""
    if meta is None or meta.url != lc.url:
        return None, None
    return meta.etag, meta.last_modified


def _meta_for_existing(lc: ListConfig, body: Path) -> SourceMeta | None:
    """Meta for a cached copy whose meta.json is gone, or None if the copy does not parse."""
    try:
        entries = len(_parse(body, lc.format).entries)
    except FilterError:
        return None
    stat = body.stat()
    return SourceMeta(
        url=lc.url or "",
        sha256=_file_sha256(body),
        bytes=stat.st_size,
        entries=entries,
        fetched_at=stat.st_mtime,
        checked_at=0.0,
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _apply_download(
    lc: ListConfig, got: Download, meta: SourceMeta | None, result: SourceResult
) -> None:
    """Validate a new body against the last good one; replace it, or say why not."""
    assert got.path is not None
    body = Path(lc.path)
    now = time.time()
    new_version: dict[str, Any] = {"etag": got.etag, "sha256": got.sha256, "entries": None}
    result.new = new_version
    if meta is not None and meta.sha256 == got.sha256:
        meta.etag, meta.last_modified, meta.checked_at = got.etag, got.last_modified, now
        meta.url = lc.url or ""
        meta.save(body.parent)
        new_version["entries"] = meta.entries
        result.status, result.reason = UNCHANGED, "same content as the cached copy"
        return
    try:
        new_parsed = _parse(got.path, lc.format)
    except FilterError as exc:
        raise FetchError(f"unreadable list: {exc}", unreachable=False) from None
    count = len(new_parsed.entries)
    new_version["entries"] = count
    if meta is not None and meta.entries > 0:
        floor = meta.entries * (1.0 - lc.max_shrink)
        if count < floor:
            raise FetchError(
                f"shrank from {meta.entries:,} to {count:,} entries "
                f"(more than max_shrink {lc.max_shrink:.0%})",
                unreachable=False,
            )
    new_keys = entry_keys(new_parsed)
    del new_parsed
    old_keys = _old_keys(lc, body) if meta is not None else set()
    result.added = len(new_keys - old_keys)
    result.removed = len(old_keys - new_keys)
    del new_keys, old_keys
    os.replace(got.path, body)
    for stale in body.parent.iterdir():
        # A copy kept under an earlier URL's file name: the new one supersedes it.
        if stale.is_file() and stale.name not in (body.name, META_NAME):
            stale.unlink(missing_ok=True)
    SourceMeta(
        url=lc.url or "",
        sha256=got.sha256,
        bytes=got.size,
        entries=count,
        fetched_at=now,
        checked_at=now,
        etag=got.etag,
        last_modified=got.last_modified,
    ).save(body.parent)
    result.status, result.reason = FETCHED, None


def _old_keys(lc: ListConfig, body: Path) -> set[str]:
    try:
        return entry_keys(_parse(body, lc.format))
    except FilterError as exc:
        log.warning("cannot read the cached copy %s to compare: %s", body, exc)
        return set()


# --- the snapshot -----------------------------------------------------------------------


def _spec_record(spec: ListSpec) -> list[Any]:
    return [spec.path, spec.name, spec.format, spec.category, spec.action.value]


def _local_signature(path: str) -> list[Any]:
    """Sizes and modification times of a local list (every file of a tree): cheap to
    compute, and changes whenever an operator edits, adds or removes a file."""
    p = Path(path)
    if not p.is_dir():
        try:
            stat = p.stat()
        except OSError:
            return []
        return [stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        for filename in sorted(filenames):
            file = Path(dirpath) / filename
            with contextlib.suppress(OSError):
                stat = file.stat()
                digest.update(
                    f"{file.relative_to(p)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
    return [digest.hexdigest()]


def _fingerprint(config: Config, specs: list[ListSpec]) -> dict[str, Any]:
    """What a snapshot was built from: specs, source versions, local file signatures."""
    sources = {}
    for lc in url_sources(config):
        meta = SourceMeta.load(Path(lc.path).parent)
        if meta is not None and Path(lc.path).exists():
            sources[lc.name] = meta.sha256
    local = {lc.path: _local_signature(lc.path) for lc in config.lists if not lc.url}
    return {"specs": [_spec_record(s) for s in specs], "sources": sources, "local": local}


def available_specs(config: Config) -> list[ListSpec]:
    """The configured lists that can be compiled: URL sources need a cached copy."""
    return config.list_specs(lc for lc in config.lists if not lc.url or Path(lc.path).exists())


def snapshot_is_current(config: Config, data_dir: str | os.PathLike[str]) -> bool:
    """True when `<data_dir>/lists.snap` loads and was built from exactly these lists."""
    path = snapshot_path(data_dir)
    try:
        compiled = load_snapshot(path)
    except SnapshotError:
        return False
    built_from = compiled.snapshot_meta.get("fingerprint")
    return built_from == _fingerprint(config, available_specs(config))


def compile_snapshot(
    config: Config, data_dir: str | os.PathLike[str], progress: Progress | None = None
) -> tuple[Path, int]:
    """Compile every available configured list into `<data_dir>/lists.snap`.

    Written to a temporary file, verified, then renamed into place. Returns the path and
    the entry count.

    Raises:
        FilterError: a list cannot be read, or the written file does not verify (the
            snapshot in place is then untouched).
    """
    final = snapshot_path(data_dir)
    specs = available_specs(config)
    fingerprint = _fingerprint(config, specs)
    if progress is not None:
        progress.stage("compile", 1, 3)
    compiled = compile_lists(specs)
    entries = sum(compiled.entry_counts.values())
    tmp = final.with_name(f".{final.name}.new")
    if progress is not None:
        progress.stage("write", 2, 3)
    try:
        write_snapshot(compiled, tmp, meta={"fingerprint": fingerprint})
        del compiled  # the verify pass below maps the file; do not hold both
        if progress is not None:
            progress.stage("verify", 3, 3)
        load_snapshot(tmp, verify=True)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final, entries


# --- the whole update -------------------------------------------------------------------


def update_sources(
    config: Config,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    only: Collection[str] | None = None,
    force_compile: bool = False,
    progress: Progress | None = None,
) -> UpdateReport:
    """Refresh URL sources and rebuild the snapshot if anything changed.

    Args:
        config: the loaded configuration (its URL sources' paths must lie in `data_dir`;
            `load_config(..., data_dir=)` puts them there when overriding it).
        data_dir: where sources, the snapshot and the audit log live; default
            `config_data_dir(config)`.
        only: names of the URL sources to fetch (the reloader passes the due ones); None
            fetches all. The others are compiled from their cached copies. With
            `server.offline` nothing is fetched.
        force_compile: compile even if no list seems to have changed.
        progress: receives download and compilation progress.

    Returns:
        Per-source results and the snapshot in force.
    """
    root = Path(data_dir) if data_dir is not None else config_data_dir(config)
    if config.server.offline:
        only = ()  # never download: URL sources serve their cached copies, if any
    report = UpdateReport()
    audit = audit_log(root)
    with _update_lock(root):
        for lc in url_sources(config):
            if only is not None and lc.name not in only:
                meta = SourceMeta.load(Path(lc.path).parent)
                report.sources.append(
                    SourceResult(
                        lc.name or "",
                        lc.url or "",
                        CACHED if meta else PENDING,
                        reason=None
                        if meta
                        else "offline: not downloaded"
                        if config.server.offline
                        else "not fetched yet",
                        entries=meta.entries if meta else None,
                    )
                )
                continue
            report.sources.append(refresh_source(lc, audit, progress))
        path = snapshot_path(root)
        changed = any(r.status == FETCHED for r in report.sources)
        if not (force_compile or changed) and snapshot_is_current(config, root):
            report.snapshot = path
            report.entries = sum(load_snapshot(path).entry_counts.values())
            return report
        start = time.perf_counter()
        try:
            report.snapshot, report.entries = compile_snapshot(config, root, progress)
        except FilterError as exc:
            report.error = str(exc)
            report.snapshot = path if path.exists() else None
            log.error("compiling the lists failed, keeping the snapshot in force: %s", exc)
            return report
        report.compiled = True
        report.compile_seconds = time.perf_counter() - start
        with contextlib.suppress(OSError):
            audit.append(
                {
                    "kind": SNAPSHOT_RECORD,
                    "result": "applied",
                    "snapshot": str(report.snapshot),
                    "entries": report.entries,
                    "lists": [spec.display_name for spec in available_specs(config)],
                    "seconds": round(report.compile_seconds, 3),
                }
            )
        log.info(
            "compiled %s entries into %s in %.2f s",
            f"{report.entries:,}",
            report.snapshot,
            report.compile_seconds,
        )
    return report


def diff_source(
    config: Config,
    data_dir: str | os.PathLike[str] | None = None,
    names: Collection[str] | None = None,
) -> list[SourceDiff]:
    """Download the pending version of URL sources and list the entries it would add and
    remove, without applying anything (no cache, meta, snapshot or audit change).

    Raises:
        KeyError: a name in `names` is not a URL source of `config`.
    """
    sources = url_sources(config)
    if names:
        known = {lc.name for lc in sources}
        missing = [n for n in names if n not in known]
        if missing:
            raise KeyError(", ".join(missing))
        sources = [lc for lc in sources if lc.name in names]
    out = []
    for lc in sources:
        assert lc.url is not None
        body = Path(lc.path)
        meta = SourceMeta.load(body.parent) if body.exists() else None
        scratch = body.parent / f"{INCOMING_DIR}-diff-{os.getpid()}"
        diff = SourceDiff(lc.name or "", FETCHED)
        try:
            etag, last_modified = _validators(lc, meta)
            got = download(
                lc.url,
                scratch / body.name,
                etag=etag,
                last_modified=last_modified,
                max_bytes=lc.max_bytes,
                timeout=lc.timeout,
            )
            if got.not_modified:
                diff.status = NOT_MODIFIED
            elif meta is not None and got.sha256 == meta.sha256:
                diff.status = UNCHANGED
            else:
                assert got.path is not None
                new_keys = entry_keys(_parse(got.path, lc.format))
                old_keys = _old_keys(lc, body) if body.exists() else set()
                diff.added = sorted(new_keys - old_keys)
                diff.removed = sorted(old_keys - new_keys)
        except FetchError as exc:
            diff.status, diff.reason = REJECTED, exc.reason
        except FilterError as exc:
            diff.status, diff.reason = REJECTED, f"unreadable list: {exc}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        out.append(diff)
    return out

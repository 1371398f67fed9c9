"""`[[lists]]`: the lists to filter with, local files or sources given by URL.

A list given by URL is downloaded (by `listsync`) into `<data_dir>/sources/<name>/`: the body
keeps the file name of the URL (so `.tar.gz`, `.gz` and UT1 names like `domains` are
recognised by `filtercore.formats.sniff_format` exactly as local files are). The naming rules
live here because the loader computes that path; listsync reads them from here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from msgspec import UNSET, Meta, UnsetType

from fdconfig.fields import (
    COMMAND_LINE,
    ConfigError,
    T,
    Table,
    Where,
    doc,
    fill,
    parse_duration,
)
from filtercore.listspec import ListSpec
from filtercore.verdict import Action

SOURCES_DIR = "sources"
LIST_ACTIONS = {"block": Action.BLOCK, "allow": Action.ALLOW}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".gz")
MIN_REFRESH = 60.0  # be kind to mirrors


class ListTable(Table):
    """One list to filter with: a local file, folder or archive, or a source given by URL."""

    path: Annotated[
        str | UnsetType,
        doc(
            "A list file, a UT1-style category tree (folder) or a `.tar.gz` archive, relative "
            "to the config file. Must exist. An `http://` or `https://` URL here is the same "
            "as `url`.",
            default_text="required (or `url`)",
        ),
    ] = UNSET
    url: Annotated[
        str | UnsetType,
        doc(
            "Download the list from this `http(s)://` URL instead (see below). Give `url` or "
            "`path`, not both.",
            default_text="none",
        ),
    ] = UNSET
    name: Annotated[
        str,
        doc(
            "The list's name in block reasons, metrics and the query log. For a list given by "
            "URL, the URL's file name without `.tar.gz`/`.tgz`/`.gz`; it names the cache "
            "folder, so it may hold only letters, digits, `.`, `_`, `-`, and two URL lists may "
            "not share one.",
            default_text="the file or folder name",
        ),
    ] = ""
    format: Annotated[
        str,
        doc(
            "The list format: `auto` (sniffed from the content), `domains`, `hosts`, "
            "`adblock`, `dnsmasq`, `rpz`, `ut1` (a category tree), `urls`, `expressions`, "
            "`keywords`, `sha256-domains`, `sha256-urls`."
        ),
    ] = "auto"
    category: Annotated[
        str,
        doc(
            "The canonical category of every entry (`adult`, `gambling`, ...). Trees map "
            "their folder names through the category map instead.",
            default_text="none",
        ),
    ] = ""
    action: Annotated[
        Literal["block", "allow"],
        doc('`"block"` or `"allow"` (an allow list: its entries are never blocked).'),
    ] = "block"
    refresh: Annotated[
        float | str | UnsetType,
        doc(
            "URL lists: how often to check for a new version: seconds, or a number with `s`, "
            '`m`, `h`, `d` or `w` (`"6h"`). At least 60 seconds.',
            default="1d",
        ),
    ] = UNSET
    max_shrink: Annotated[
        Annotated[float, Meta(ge=0, le=1.0)] | UnsetType,
        doc(
            "URL lists: reject a new version with fewer than (1 - this) times the entries of "
            "the last good one (0..1; `0` rejects any shrinking, `1` accepts anything).",
            default=0.5,
        ),
    ] = UNSET
    max_bytes: Annotated[
        Annotated[int, Meta(ge=1024)] | UnsetType,
        doc(
            "URL lists: abort a download larger than this many bytes (at least 1024).",
            default=512 * 1024 * 1024,
        ),
    ] = UNSET
    timeout: Annotated[
        Annotated[float, Meta(gt=0, le=3600.0)] | UnsetType,
        doc(
            "URL lists: seconds the whole download may take (connecting and each read wait at "
            "most 30 of them).",
            default=300.0,
        ),
    ] = UNSET


FETCH_KEYS = ("refresh", "max_shrink", "max_bytes", "timeout")


@dataclass(frozen=True)
class ListConfig:
    """One `[[lists]]` entry; `path` is absolute once loaded.

    A source given by URL (`url`, or a `path` that is an http(s) URL) has `url` set and
    `path` pointing at its cached copy under `<data_dir>/sources/<name>/` (see `listsync`),
    which may not exist until the first `filterdns lists update`. `refresh`, `max_shrink`,
    `max_bytes` and `timeout` apply to URL sources only.
    """

    path: str
    name: str | None = None
    format: str = "auto"
    category: str | None = None
    action: str = "block"
    url: str | None = None
    refresh: float = 86_400.0
    max_shrink: float = 0.5
    max_bytes: int = 512 * 1024 * 1024
    timeout: float = 300.0

    def to_spec(self) -> ListSpec:
        """The `filtercore.listspec.ListSpec` that compiles this list."""
        return ListSpec(
            path=self.path,
            name=self.name,
            format=self.format,
            category=self.category,
            action=LIST_ACTIONS[self.action],
        )


def build(tables: list[ListTable], where: Where, prefix: str = "lists") -> tuple[ListConfig, ...]:
    known = known_formats()
    out = []
    source_names: set[str] = set()
    for i, table in enumerate(tables):
        key = f"{prefix}[{i}]"
        name = table.name or None
        url = _list_url(table, where, key)
        if url is not None:
            name = _source_name(url, name, source_names, where, key)
            path = body_path(where.data_dir, name, url)
        else:
            if table.path is UNSET:
                raise where.error(
                    f"{key}.path", "is required (a file, folder, archive or http(s) URL)"
                )
            if not table.path.strip():
                raise where.error(f"{key}.path", "must not be empty")
            path = where.base / Path(table.path).expanduser()
            if not path.exists():
                raise where.error(f"{key}.path", f"{path}: no such file or folder")
            for fetch_key in FETCH_KEYS:
                if getattr(table, fetch_key) is not UNSET:
                    raise where.error(f"{key}.{fetch_key}", "applies only to a list given by URL")
        if table.format not in known:
            raise where.error(
                f"{key}.format",
                f'unknown format "{table.format}" (one of {", ".join(sorted(known))})',
            )
        defaults = ListConfig(path="")
        out.append(
            fill(
                ListConfig,
                table,
                path=str(path),
                name=name,
                category=table.category or None,
                url=url,
                refresh=_refresh(table.refresh, defaults.refresh, where, f"{key}.refresh"),
                max_shrink=_given(table.max_shrink, defaults.max_shrink),
                max_bytes=_given(table.max_bytes, defaults.max_bytes),
                timeout=_given(table.timeout, defaults.timeout),
            )
        )
    return tuple(out)


def _given(value: T | UnsetType, default: T) -> T:
    return default if isinstance(value, UnsetType) else value


def _refresh(value: float | str | UnsetType, default: float, where: Where, key: str) -> float:
    if isinstance(value, UnsetType):
        return default
    seconds = where.one(key, value, parse_duration)  # type: ignore[arg-type]
    if seconds < MIN_REFRESH:
        raise where.error(key, f"must be at least 60 seconds, got {value!r}")
    return seconds


def _list_url(table: ListTable, where: Where, key: str) -> str | None:
    """The http(s) URL of a list given by `url` or by a URL `path`; None for a local list."""
    url = table.url.strip() if isinstance(table.url, str) else ""
    field = "url"
    if isinstance(table.path, str) and is_url(table.path.strip()):
        if url:
            raise where.error(f"{key}.url", "give the URL in url or in path, not both")
        url, field = table.path.strip(), "path"
    elif url and table.path is not UNSET:
        raise where.error(
            f"{key}.path", "a list given by url has no path (its copy is kept in data_dir)"
        )
    if not url:
        return None
    if not is_url(url):
        raise where.error(f"{key}.{field}", f'"{url}" is not an http:// or https:// URL')
    where.one(f"{key}.{field}", url, url_file_name)
    return url


def _source_name(url: str, name: str | None, seen: set[str], where: Where, key: str) -> str:
    """A URL source's name names its cache folder: safe as a file name and unique."""
    name = where.one(f"{key}.name", name or default_source_name(url), check_source_name)
    if name in seen:
        raise where.error(
            f"{key}.name", f'"{name}" names another list given by URL; give each its own name'
        )
    seen.add(name)
    return name


def known_formats() -> frozenset[str]:
    """The list format names a config may use: filtercore's formats and "auto"."""
    from filtercore.formats import FORMATS

    return frozenset(FORMATS) | {"auto"}


def from_flag(text: str) -> ListConfig:
    """A `--list PATH[:CATEGORY[:FORMAT]]` flag, PATH relative to the current directory."""
    from filtercore.errors import FilterError

    try:
        spec = ListSpec.parse(text)
    except FilterError as e:
        raise ConfigError(COMMAND_LINE, "--list", str(e)) from None
    path = Path(spec.path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(COMMAND_LINE, "--list", f"{path}: no such file or folder")
    if spec.format not in known_formats():
        raise ConfigError(COMMAND_LINE, "--list", f'unknown format "{spec.format}"')
    return ListConfig(path=str(path), format=spec.format, category=spec.category)


# --- where a source given by URL is kept --------------------------------------------------


def is_url(text: str) -> bool:
    """True for an `http://` or `https://` URL (the only schemes a source may use)."""
    return text.lower().startswith(("http://", "https://"))


def url_file_name(url: str) -> str:
    """The file name the body of `url` is stored under: the last path segment, or `list`.

    Raises:
        ValueError: the URL is not http(s) or has no host.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    base = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    return base or "list"


def default_source_name(url: str) -> str:
    """A list name for a URL source without `name`: its file name without archive suffixes."""
    base = url_file_name(url)
    for suffix in _ARCHIVE_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def check_source_name(name: str) -> str:
    """A source name becomes a folder name: letters, digits, `.`, `_`, `-` only.

    Raises:
        ValueError: the name cannot be used as a folder name.
    """
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"{name!r} cannot name a downloaded source (use letters, digits, '.', '_', '-')"
        )
    return name


def source_dir(data_dir: str | os.PathLike[str], name: str) -> Path:
    """The cache folder of one URL source."""
    return Path(data_dir) / SOURCES_DIR / name


def body_path(data_dir: str | os.PathLike[str], name: str, url: str) -> Path:
    """Where the last good body of a URL source is kept (the list path the compiler reads)."""
    return source_dir(data_dir, name) / url_file_name(url)

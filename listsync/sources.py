"""Where list sources live on disk, and the small value parsers their config keys need.

A list source given by URL is downloaded into `<data_dir>/sources/<name>/`: the body keeps
the file name of the URL (so `.tar.gz`, `.gz` and UT1 names like `domains` are recognised by
`filtercore.formats.sniff_format` exactly as local files are), beside `meta.json` holding the
validators and the facts of the last good version. The compiled snapshot of all lists is
`<data_dir>/lists.snap` and the audit trail `<data_dir>/audit.jsonl`.

This module imports nothing from `dns_resolver`, so the config loader can use it to compute
a URL source's cached path without an import cycle.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

SOURCES_DIR = "sources"
SNAPSHOT_NAME = "lists.snap"
AUDIT_NAME = "audit.jsonl"
META_NAME = "meta.json"
INCOMING_DIR = "incoming"  # a download waiting for validation, same file name as the body

DEFAULT_REFRESH = 86_400.0
DEFAULT_MAX_SHRINK = 0.5
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".gz")


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


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string like `"90"`, `"30m"`, `"6h"`, `"1d"`, `"1w"`.

    Raises:
        ValueError: not a positive duration.
    """
    if isinstance(value, bool):
        raise ValueError('must be a number of seconds or a duration like "6h", got a boolean')
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f'must be seconds or a duration like "30m", "6h", "1d", got "{value}"')
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds

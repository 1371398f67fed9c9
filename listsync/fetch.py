"""Downloading one list source: conditional requests, limits, and integrity checks.

A download is written to a file beside the cached copy (never over it), hashed on the way,
and checked before anyone parses it: the body must be complete (httpx/h11 refuse a body
shorter than its Content-Length; the byte count is checked again here), no larger than the
source's `max_bytes`, and a gzip body (a `.gz` list or a `.tar.gz` tree) must decompress
to its end with a good CRC. The caller (`listsync.update`) then parses and compares it with
the last good version before it replaces anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from filtercore.formats._common import GZIP_MAGIC
from filterdns import __version__
from listsync.sources import META_NAME

ByteProgress = Callable[[int, "int | None"], None]
"""Called as bytes arrive: (bytes so far, total from Content-Length or None)."""

_CHUNK = 256 * 1024
_USER_AGENT = f"filterdns/{__version__} (list updater)"

LOOPBACK_ONLY_ENV = "FILTERDNS_LOOPBACK_ONLY"
"""Set (to anything but "" or "0") by the test suite and `.ci/run`: a download from a host
that is not a loopback address is refused, so no test can reach a real list server."""


def loopback_only() -> bool:
    """True when `FILTERDNS_LOOPBACK_ONLY` forbids downloads from non-loopback hosts."""
    return os.environ.get(LOOPBACK_ONLY_ENV, "") not in ("", "0")


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse_non_loopback(request: httpx.Request) -> None:
    """An httpx request hook: the first request and every redirect are checked."""
    host = request.url.host
    if not is_loopback_host(host):
        raise FetchError(
            f"refused to fetch from {host}: not a loopback address "
            f"({LOOPBACK_ONLY_ENV} is set)",
            unreachable=True,
        )


class FetchError(Exception):
    """A download that cannot be used.

    `unreachable` is true when no usable answer came back (connection refused, timeout,
    an HTTP error status): the source is down and its cached copy stays in use. False when
    an answer came back but its body is bad (truncated, too large, corrupt gzip): the
    download is rejected.
    """

    def __init__(self, reason: str, *, unreachable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


@dataclass
class SourceMeta:
    """What `meta.json` records about the last good copy of a source."""

    url: str
    sha256: str
    bytes: int
    entries: int
    fetched_at: float  # when this body was downloaded
    checked_at: float  # when the server last confirmed it (200 or 304)
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def load(cls, folder: Path) -> SourceMeta | None:
        """The meta of the cached copy in `folder`, or None if there is none (or it is bad)."""
        try:
            data = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in fields})
        except (OSError, ValueError, TypeError):
            return None

    def save(self, folder: Path) -> None:
        """Write `meta.json` atomically (temp file, fsync, rename)."""
        write_atomic(folder / META_NAME, json.dumps(dataclasses.asdict(self), indent=1).encode())

    def version(self) -> dict[str, object]:
        """The version fields an audit record names."""
        return {"etag": self.etag, "sha256": self.sha256, "entries": self.entries}


@dataclass(frozen=True)
class Download:
    """The outcome of one request: a new body in `path`, or `not_modified` (HTTP 304)."""

    not_modified: bool
    path: Path | None = None
    sha256: str = ""
    size: int = 0
    etag: str | None = None
    last_modified: str | None = None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def download(
    url: str,
    dest: Path,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int,
    timeout: float,
    progress: ByteProgress | None = None,
) -> Download:
    """GET `url` into `dest`, conditionally when validators of the cached copy are given.

    `timeout` bounds the whole download; connecting and each read wait at most 30 s of it.

    Raises:
        FetchError: unreachable, an HTTP error, too large, truncated, or corrupt gzip.
    """
    headers = {"User-Agent": _USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    dest.parent.mkdir(parents=True, exist_ok=True)
    hooks = {"request": [_refuse_non_loopback]} if loopback_only() else {}
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(min(timeout, 30.0)),
                follow_redirects=True,
                headers=headers,
                event_hooks=hooks,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code == 304:
                return Download(not_modified=True)
            if response.status_code != 200:
                raise FetchError(
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                    unreachable=True,
                )
            return _receive(response, dest, max_bytes, deadline, progress)
    except httpx.TimeoutException:
        dest.unlink(missing_ok=True)
        raise FetchError(f"timed out after {timeout:g} s", unreachable=True) from None
    except httpx.RemoteProtocolError as exc:
        # h11 raises this when the connection closes before Content-Length bytes arrived.
        dest.unlink(missing_ok=True)
        raise FetchError(f"truncated download: {exc}", unreachable=False) from None
    except httpx.HTTPError as exc:
        dest.unlink(missing_ok=True)
        reason = str(exc) or type(exc).__name__
        raise FetchError(f"download failed: {reason}", unreachable=True) from None
    except FetchError:
        dest.unlink(missing_ok=True)
        raise


def _receive(
    response: httpx.Response,
    dest: Path,
    max_bytes: int,
    deadline: float,
    progress: ByteProgress | None,
) -> Download:
    declared_text = response.headers.get("content-length")
    declared = int(declared_text) if declared_text and declared_text.isdigit() else None
    # Content-Encoding (a transfer compression) changes the byte count; the raw count is
    # what Content-Length promises.
    encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    if declared is not None and declared > max_bytes and not encoded:
        raise FetchError(
            f"too large: {declared:,} bytes announced, max_bytes is {max_bytes:,}",
            unreachable=False,
        )
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        for chunk in response.iter_bytes(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(
                    f"too large: more than max_bytes ({max_bytes:,}) received", unreachable=False
                )
            if time.monotonic() > deadline:
                raise FetchError("timed out while downloading", unreachable=True)
            digest.update(chunk)
            out.write(chunk)
            if progress is not None:
                progress(size, None if encoded else declared)
        out.flush()
        os.fsync(out.fileno())
    if declared is not None and not encoded and response.num_bytes_downloaded != declared:
        raise FetchError(
            f"truncated download: {response.num_bytes_downloaded:,} of {declared:,} bytes",
            unreachable=False,
        )
    check_gzip(dest)
    return Download(
        not_modified=False,
        path=dest,
        sha256=digest.hexdigest(),
        size=size,
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
    )


def check_gzip(path: Path) -> None:
    """If `path` is gzip data, decompress it to the end in a streaming pass (CRC and length
    checked by zlib); a body cut anywhere fails here, before anyone parses it.

    Accepts what Python's gzip module reads: several members in a row, and zero padding
    after the last one.

    Raises:
        FetchError: the gzip stream is corrupt or ends early.
    """
    with open(path, "rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            return
        handle.seek(0)
        inflater = zlib.decompressobj(wbits=31)
        pending = b""
        try:
            while chunk := pending or handle.read(_CHUNK):
                pending = b""
                if inflater.eof:
                    # Past a member's end: zero padding, or the next member.
                    chunk = chunk.lstrip(b"\0")
                    if not chunk:
                        continue
                    inflater = zlib.decompressobj(wbits=31)
                while chunk:
                    # Bound the output per call, so a gzip bomb costs time, not memory.
                    inflater.decompress(chunk, _CHUNK * 16)
                    chunk = inflater.unconsumed_tail
                    if inflater.eof:
                        pending = inflater.unused_data
                        break
        except zlib.error as exc:
            raise FetchError(f"corrupt gzip data: {exc}", unreachable=False) from None
        if not inflater.eof:
            raise FetchError("truncated gzip data (the stream ends early)", unreachable=False)

"""Helpers every list parser shares: reading a file, splitting lines, comments, host tokens.

Line numbers everywhere are 1-based and count `\\n` only (a `\\r\\n` file counts the same), so
they agree with `grep -n` and editors. A line that is not valid UTF-8 is reported once by
`content_lines` and skipped; the rest of the file loads.
"""

from __future__ import annotations

import gc
import gzip
import ipaddress
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filtercore.entries import Kind, ParsedList, Problem, Scope
from filtercore.errors import ListFormatError
from filtercore.normalize import normalize_ip, normalize_name

GZIP_MAGIC = b"\x1f\x8b"

TextParser = Callable[[str, str, ParsedList, "str | None"], None]
"""The shape of every per-file parser: `(text, source, out, category) -> None`."""
BAD_UTF8 = "\ufffd"  # what undecodable bytes become; the line is then reported
NOT_UTF8 = "not valid UTF-8 (undecodable bytes)"


def decode(data: bytes, source: str) -> str:
    """Decode a list's bytes as UTF-8 (a BOM is dropped).

    Undecodable bytes become U+FFFD so that line numbers survive; `content_lines` then
    reports the lines that hold them.

    Raises:
        ListFormatError: the data holds NUL bytes, so it is binary (or UTF-16), not a list.
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ListFormatError(source, f"binary file (NUL byte at offset {nul}), not a text list")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")


def read_bytes(path: str | Path) -> bytes:
    """Read a whole file, transparently gunzipping it when it starts with the gzip magic.

    Raises:
        ListFormatError: the file is missing, a folder, unreadable, or a corrupt gzip stream.
    """
    return _read(path, None)


def read_head(path: str | Path, size: int) -> bytes:
    """The first `size` bytes of a file (decompressed when gzip), for sniffing its format.

    Raises:
        ListFormatError: as `read_bytes`.
    """
    return _read(path, size)


def _read(path: str | Path, size: int | None) -> bytes:
    """Read all of a file, or its first `size` bytes, gunzipped; errors as ListFormatError."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(-1 if size is None else size)
            if not data.startswith(GZIP_MAGIC):
                return data
            handle.seek(0)
            with gzip.open(handle) as unzipped:
                return unzipped.read(-1 if size is None else size)
    except FileNotFoundError:
        raise ListFormatError(where, "no such file") from None
    except IsADirectoryError:
        raise ListFormatError(where, "is a folder, not a list file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ListFormatError(where, f"corrupt gzip data: {exc}") from None
    except OSError as exc:
        raise ListFormatError(where, f"cannot read: {exc.strerror or exc}") from None


def gunzip_if_compressed(data: bytes, source: str) -> bytes:
    """Decompress `data` if it starts with the gzip magic, else return it unchanged.

    Raises:
        ListFormatError: the gzip stream is corrupt or truncated.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ListFormatError(source, f"corrupt gzip data: {exc}") from None


def read_text(path: str | Path) -> str:
    """Read a list file as text (see `read_bytes` and `decode` for what is refused)."""
    return decode(read_bytes(path), str(path))


def split_lines(text: str) -> list[str]:
    """Split on `\\n` (after folding `\\r\\n`), without a phantom last line after a final newline.

    Other Unicode line breaks are deliberately not line breaks, so numbering matches
    `grep -n`; a stray one shows up as a bad character in the line it is in.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def cut_comment(line: str, marker: str = "#") -> str:
    """Drop an inline comment starting at `marker` and the white space around what is left."""
    cut = line.find(marker)
    if cut >= 0:
        line = line[:cut]
    return line.strip()


# One line's parser: (line, number, source, out, category) -> why it is unusable, or None.
LineParser = Callable[[str, int, str, ParsedList, "str | None"], "str | None"]


def parse_each_line(
    text: str,
    source: str,
    out: ParsedList,
    category: str | None,
    parse_line: LineParser,
    comments: tuple[str, ...] = ("#",),
) -> None:
    """Run `parse_line` on every content line; a returned reason becomes a Problem."""
    for number, line in content_lines(text, source, out, comments):
        reason = parse_line(line, number, source, out, category)
        if reason:
            out.problems.append(Problem(source, number, line, reason))


def content_lines(
    text: str,
    source: str,
    out: ParsedList,
    comments: tuple[str, ...] = ("#",),
    keep_indent: bool = False,
) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, stripped_line)` for each line that is neither blank nor a comment.

    A line starting with one of `comments` (after white space) is a comment. With
    `keep_indent`, leading white space is kept (it means something in zone files). Lines holding
    undecodable bytes are reported to `out.problems` and not yielded. Inline comments are
    left to the caller, because a comment marker may be data in some formats (`#` in
    dnsmasq's `address=/x/#`).
    """
    damaged = BAD_UTF8 in text
    for number, raw in enumerate(split_lines(text), 1):
        line = raw.strip()
        if not line or line.startswith(comments):
            continue
        if damaged and BAD_UTF8 in line:
            out.problems.append(Problem(source, number, raw, NOT_UTF8))
            continue
        yield number, raw.rstrip() if keep_indent else line


def parse_host(token: str, *, wildcard: bool = True) -> tuple[Kind, str, Scope]:
    """Turn one host token from a list into `(kind, value, scope)`.

    `*.example.com` (when `wildcard`) covers only names below `example.com`; a leading dot
    (`.example.com`, squid's dstdomain form) means the same as `example.com`. IPv4 and IPv6
    literals become `Kind.IP` entries in canonical text form.

    Raises:
        InvalidNameError: the token is not a valid host name (the reason says why).
    """
    scope = Scope.SUBTREE
    if wildcard and token.startswith("*."):
        token = token[2:]
        scope = Scope.BELOW
    elif token.startswith(".") and len(token) > 1 and token[1] != ".":
        token = token[1:]
    if scope is Scope.SUBTREE and (token[:1].isdigit() or ":" in token or token[:1] == "["):
        ip = normalize_ip(token)
        if ip is not None:
            return Kind.IP, ip, scope
    return Kind.DOMAIN, normalize_name(token), scope


def is_sinkhole(address: str) -> bool:
    """True for the addresses blocklists answer with: unspecified (0.0.0.0, ::) or loopback."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_unspecified or ip.is_loopback


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a parser allocates millions of entries.

    Entries and problems are tuples of strings and ints: they form no cycles, so the
    collections the allocation count would trigger find nothing and only cost time
    (about 40% of the parse time at 1M entries).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

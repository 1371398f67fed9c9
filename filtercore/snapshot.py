"""Compiled snapshot files: a matcher's lists in one file that loads without parsing text.

Layout (all integers little-endian; every section starts on a 64-byte boundary):

    0   magic  b"FDNSSNAP"
    8   u32    format version (SNAPSHOT_VERSION)
    12  u32    reserved, 0
    16  u64    header length H
    24  u64    payload length P
    32  32 B   SHA-256 of the header
    64  H B    header: UTF-8 JSON (categories, lists, groups, text rules, table shapes,
               section offsets, the payload's CRC-32, the table secret, build facts)
    ..  pad to 64
    ..  P B    payload: the table arrays (keys, groups, lines, directory) of the plain and
               the SHA-256 tables

Loading maps the file read-only and wraps the arrays in place: N processes that load the
same file share one copy of the table in the page cache, and start-up costs a header parse.
`verify=True` also checks the payload's CRC-32 (one pass over the table); the compiler and
the reloader verify before a snapshot goes into service, start-up need not.

The header holds the table's hash secret: keep snapshot files as private as the service's
own data (the writer creates them mode 0640).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from filtercore._table import DomainTable
from filtercore.compiler import CompiledLists, Group, ListInfo, TextRule
from filtercore.entries import Kind, Problem
from filtercore.errors import FilterError
from filtercore.verdict import Action

MAGIC = b"FDNSSNAP"
SNAPSHOT_VERSION = 1
_PREFIX = struct.Struct("<8sIIQQ32s")
_ALIGN = 64
_KEPT_PROBLEMS = 1000


class SnapshotError(FilterError):
    """A snapshot file that cannot be used: missing, truncated, corrupt or of another version."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"snapshot {os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def write_snapshot(
    compiled: CompiledLists, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None
) -> Path:
    """Write `compiled` to `path` atomically (a temporary file renamed into place).

    `meta` is stored as is in the header (sources, versions: whatever the caller needs to
    know later about this build). Returns the path written.
    """
    target = Path(path)
    sections: list[tuple[str, bytes | bytearray | memoryview]] = []
    tables: dict[str, Any] = {}
    for name, table in (("plain", compiled.plain), ("hashed", compiled.hashed)):
        keys, groups, lines, directory = table.buffers()
        tables[name] = {"n": len(table), "shift": table.shift}
        for part, buf in (("keys", keys), ("groups", groups), ("lines", lines), ("dir", directory)):
            sections.append((f"{name}.{part}", buf))
    offsets: dict[str, list[int]] = {}
    crc = 0
    position = 0
    for name, buf in sections:
        offsets[name] = [position, len(buf)]
        crc = zlib.crc32(buf, crc)
        position += len(buf)
        padding = _pad(position)
        crc = zlib.crc32(bytes(padding), crc)
        position += padding
    header = {
        "version": SNAPSHOT_VERSION,
        "created": time.time(),
        "secret": [compiled.plain.k0, compiled.plain.k1],
        "tables": tables,
        "sections": offsets,
        "payload_crc32": crc,
        "categories": list(compiled.categories),
        "lists": [
            [i.name, i.source, i.category, i.action.value, i.spec_path, i.spec_format]
            for i in compiled.lists
        ],
        "groups": [
            [
                g.flags,
                g.self_cats,
                g.below_cats,
                [list(pair) for pair in g.block_lists],
                [list(pair) for pair in g.allow_lists],
                g.line_list,
                g.nodata,
            ]
            for g in compiled.groups
        ],
        "text_rules": [
            [r.list, r.line, r.value, r.action.value, int(r.kind), r.mode]
            for r in compiled.text_rules
        ],
        "problems": [list(p) for p in compiled.problems[:_KEPT_PROBLEMS]],
        "problem_count": compiled.problem_count,
        "entry_counts": compiled.entry_counts,
        "meta": meta or {},
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(
        MAGIC,
        SNAPSHOT_VERSION,
        0,
        len(header_bytes),
        position,
        hashlib.sha256(header_bytes).digest(),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(prefix)
            out.write(header_bytes)
            out.write(bytes(_pad(len(prefix) + len(header_bytes))))
            for _name, buf in sections:
                out.write(buf)
                out.write(bytes(_pad(len(buf))))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_snapshot(path: str | os.PathLike[str], *, verify: bool = False) -> CompiledLists:
    """Map a snapshot file and return its compiled lists (the arrays stay in the file).

    Raises:
        SnapshotError: the file is missing, truncated, corrupt (header checksum, or payload
            CRC with `verify=True`), or of another format version.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _PREFIX.size:
                raise SnapshotError(path, f"{size} bytes: too short to be a snapshot")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise SnapshotError(path, exc.strerror or str(exc)) from None
    magic, version, _reserved, header_len, payload_len, header_sha = _PREFIX.unpack_from(mapped)
    if magic != MAGIC:
        raise SnapshotError(path, "not a filterdns snapshot (bad magic)")
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(path, f"format version {version}, this build reads {SNAPSHOT_VERSION}")
    header_end = _PREFIX.size + header_len
    payload_start = header_end + _pad(header_end)
    if payload_start + payload_len != size:
        raise SnapshotError(
            path, f"truncated or padded: {size} bytes, header says {payload_start + payload_len}"
        )
    header_bytes = mapped[_PREFIX.size : header_end]
    if hashlib.sha256(header_bytes).digest() != header_sha:
        raise SnapshotError(path, "header checksum mismatch (corrupt file)")
    header = json.loads(header_bytes)
    view = memoryview(mapped)
    payload = view[payload_start:]
    if verify and zlib.crc32(payload) != header["payload_crc32"]:
        raise SnapshotError(path, "payload checksum mismatch (corrupt file)")

    def section(name: str) -> memoryview:
        offset, length = header["sections"][name]
        if offset + length > payload_len:
            raise SnapshotError(path, f"section {name} lies outside the payload")
        return payload[offset : offset + length]

    k0, k1 = header["secret"]
    tables = {}
    for name in ("plain", "hashed"):
        shape = header["tables"][name]
        try:
            tables[name] = DomainTable.from_arrays(
                k0,
                k1,
                section(f"{name}.keys"),
                section(f"{name}.groups"),
                section(f"{name}.lines"),
                section(f"{name}.dir"),
                shape["shift"],
            )
        except ValueError as exc:
            raise SnapshotError(path, f"{name} table: {exc}") from None
    compiled = CompiledLists(
        categories=tuple(header["categories"]),
        lists=[
            ListInfo(name, source, category, Action(action), spec_path, spec_format)
            for name, source, category, action, spec_path, spec_format in header["lists"]
        ],
        groups=[
            Group(
                flags,
                self_cats,
                below_cats,
                tuple((i, scope) for i, scope in block),
                tuple((i, scope) for i, scope in allow),
                line_list,
                nodata,
            )
            for flags, self_cats, below_cats, block, allow, line_list, nodata in header["groups"]
        ],
        plain=tables["plain"],
        hashed=tables["hashed"],
        text_rules=[
            TextRule(lst, line, value, Action(action), Kind(kind), mode)
            for lst, line, value, action, kind, mode in header["text_rules"]
        ],
        problems=[Problem(*p) for p in header["problems"]],
        problem_count=header["problem_count"],
        entry_counts=header["entry_counts"],
        snapshot_meta={**header["meta"], "created": header["created"], "path": os.fspath(path)},
    )
    return compiled

"""Reading a line back from a list's source, to show a rule as written."""

from __future__ import annotations

import gzip
import itertools
import os
import tarfile
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

# Every STRIDE-th line's offset is kept: a read seeks there and skips at most STRIDE - 1
# lines, and the index costs 8 bytes per STRIDE lines of a source that was ever explained.
STRIDE = 128
_MAX_INDEXES = 64

_indexes: OrderedDict[tuple[str, int, int], array[int]] = OrderedDict()
_lock = threading.Lock()


def _unlock_after_fork() -> None:
    # A process forked while another thread read a rule (the console's query-log writer)
    # would otherwise wait for that thread, which it does not have, forever.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_after_fork)


def read_line(source: str, line: int) -> str | None:
    """Line `line` (1-based) of `source`, stripped; None when it cannot be read.

    `source` is a file path, a `.gz` file, or `archive.tar.gz!member` for a file inside a
    category-tree archive. The text is read lazily because keeping millions of rules in
    memory would cost more than the table itself; a list changed on disk since it was
    compiled may therefore show a different line (the verdict's `matched` stays exact).
    Plain files are read through a sparse line index built on first use, so a read costs
    a seek and at most STRIDE lines; compressed sources are read from their start.
    """
    if line <= 0:
        return None
    try:
        if "!" in source:
            archive, member = source.split("!", 1)
            with tarfile.open(archive) as tar:
                stream = tar.extractfile(member)
                if stream is None:
                    return None
                return _nth(stream, line)
        path = Path(source)
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as gz:
                return _nth(gz, line)
        with open(path, "rb") as plain:
            offsets = _index(plain)
            block = (line - 1) // STRIDE
            if block >= len(offsets):
                return None
            plain.seek(offsets[block])
            return _nth(plain, line - block * STRIDE)
    except (OSError, tarfile.TarError, EOFError, KeyError):
        return None


def _index(stream) -> array[int]:  # type: ignore[no-untyped-def]
    """The offsets of lines 1, 1 + STRIDE, 1 + 2 * STRIDE, ... of an open plain file."""
    st = os.fstat(stream.fileno())
    key = (stream.name, st.st_size, st.st_mtime_ns)
    with _lock:
        offsets = _indexes.get(key)
        if offsets is not None:
            _indexes.move_to_end(key)
            return offsets
    offsets = array("Q", [0])
    position = 0
    for number, raw in enumerate(stream, 1):
        position += len(raw)
        if number % STRIDE == 0:
            offsets.append(position)
    with _lock:
        _indexes[key] = offsets
        while len(_indexes) > _MAX_INDEXES:
            _indexes.popitem(last=False)
    return offsets


def _nth(stream: Iterable[bytes], line: int) -> str | None:
    raw = next(itertools.islice(stream, line - 1, None), None)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace").strip()

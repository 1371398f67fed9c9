"""Reading a line back from a list's source, to show a rule as written."""

from __future__ import annotations

import gzip
import itertools
import tarfile
from collections.abc import Iterable
from pathlib import Path


def read_line(source: str, line: int) -> str | None:
    """Line `line` (1-based) of `source`, stripped; None when it cannot be read.

    `source` is a file path, a `.gz` file, or `archive.tar.gz!member` for a file inside a
    category-tree archive. The text is read lazily because keeping millions of rules in
    memory would cost more than the table itself; a list changed on disk since it was
    compiled may therefore show a different line (the verdict's `matched` stays exact).
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
            return _nth(plain, line)
    except (OSError, tarfile.TarError, EOFError):
        return None


def _nth(stream: Iterable[bytes], line: int) -> str | None:
    raw = next(itertools.islice(stream, line - 1, None), None)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace").strip()

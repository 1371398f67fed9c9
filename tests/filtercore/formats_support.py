"""Helpers shared by the list-format tests (tests/filtercore/test_formats_*.py)."""

from __future__ import annotations

import os
from pathlib import Path

from filtercore.entries import ParsedList
from filtercore.formats import parse_list

ROOT = Path(__file__).resolve().parents[2]
# The real UT1 snapshot next to the project (see ../shared/data/README.md).
UT1 = Path(os.environ.get("FILTERDNS_UT1", ROOT.parent / "shared" / "data" / "ut1"))


def write(folder: Path, name: str, text: str | bytes) -> Path:
    """Write a fixture file (creating folders in `name`) and return its path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def parse(folder: Path, fmt: str, text: str | bytes, name: str = "list.txt") -> ParsedList:
    """Write `text` to a file in `folder` and parse it as `fmt`."""
    return parse_list(str(write(folder, name, text)), fmt)


def values(parsed: ParsedList) -> list[str]:
    return [entry.value for entry in parsed.entries]


def reasons(parsed: ParsedList) -> list[tuple[int, str]]:
    return [(problem.line, problem.reason) for problem in parsed.problems]


def ut1_lines(category: str, name: str) -> list[str]:
    """The raw lines of a real UT1 file, read without filtercore (for independent counts)."""
    with open(UT1 / category / name, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]

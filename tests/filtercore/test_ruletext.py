"""Reading rules back from list sources, through the sparse line index."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from filtercore.ruletext import STRIDE, read_line


def test_every_line_of_a_long_file_reads_back(tmp_path: Path) -> None:
    lines = [f"name{i}.example" for i in range(STRIDE * 5 + 3)]
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    for number in (1, 2, STRIDE, STRIDE + 1, STRIDE * 2, len(lines)):
        assert read_line(str(path), number) == lines[number - 1]
    assert read_line(str(path), len(lines) + 1) is None
    assert read_line(str(path), 0) is None


def test_a_changed_file_is_indexed_again(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("a.example\nb.example\n")
    assert read_line(str(path), 2) == "b.example"
    path.write_text("x" * 300 + "\nc.example\n")
    os.utime(path, ns=(1, 1))
    assert read_line(str(path), 2) == "c.example"


def test_compressed_sources(tmp_path: Path) -> None:
    gz = tmp_path / "list.gz"
    with gzip.open(gz, "wt") as f:
        f.write("a.example\nb.example\n")
    assert read_line(str(gz), 2) == "b.example"
    member = tmp_path / "domains"
    member.write_text("c.example\nd.example\n")
    archive = tmp_path / "ut1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(member, arcname="adult/domains")
    assert read_line(f"{archive}!adult/domains", 2) == "d.example"
    assert read_line(f"{archive}!missing", 1) is None
    assert read_line(str(tmp_path / "nope.txt"), 1) is None

"""UT1 / Shallalist category trees: folders, single categories, archives, gzip files."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from collections import Counter

import pytest

from filtercore.entries import Kind
from filtercore.errors import ListFormatError
from filtercore.formats import parse_list
from tests.filtercore.formats_support import UT1, ut1_lines, write


def count_nonblank(category: str, name: str) -> int:
    return sum(1 for line in ut1_lines(category, name) if line.strip())


def test_a_single_real_category_folder() -> None:
    parsed = parse_list(str(UT1 / "chat"), "ut1")
    assert parsed.format == "ut1"
    kinds = Counter(entry.kind for entry in parsed.entries)
    assert kinds[Kind.DOMAIN] + kinds[Kind.IP] == count_nonblank("chat", "domains")
    assert kinds[Kind.URL] == count_nonblank("chat", "urls")
    assert {entry.category for entry in parsed.entries} == {"chat"}
    # chat's usage file says `black` then `white`: the first is the intended use.
    assert parsed.usage == {"chat": "black"}
    assert parsed.problems == []
    first = parsed.entries[0]
    assert first.source == str(UT1 / "chat" / "domains") and first.line == 1


def copy_tree(tmp_path, categories: list[str]):
    root = tmp_path / "blacklists"
    for category in categories:
        shutil.copytree(UT1 / category, root / category)
    return root


def test_a_tree_of_categories(tmp_path) -> None:
    root = copy_tree(tmp_path, ["adult", "doh", "sexual_education", "malware"])
    (root / "porn").symlink_to(root / "adult")  # UT1's aliases are symlinked folders
    write(root / "doh", "README", "not a list")
    parsed = parse_list(str(root), "ut1")
    # Addresses in `domains` files are Kind.IP entries: count them with the names.
    per_category = Counter(
        (entry.category, Kind.DOMAIN if entry.kind is Kind.IP else entry.kind)
        for entry in parsed.entries
    )
    assert per_category == {
        ("adult", Kind.URL): count_nonblank("adult", "urls"),
        ("doh", Kind.DOMAIN): count_nonblank("doh", "domains"),
        ("doh", Kind.URL): count_nonblank("doh", "urls"),
        ("sexual_education", Kind.DOMAIN): count_nonblank("sexual_education", "domains"),
        ("sexual_education", Kind.URL): count_nonblank("sexual_education", "urls"),
        ("malware", Kind.EXPRESSION): 1,
        ("malware", Kind.URL): count_nonblank("malware", "urls"),
    }
    # very_restrictive_expression is an opt-in: not loaded from a tree.
    assert not any(e.source.endswith("very_restrictive_expression") for e in parsed.entries)
    assert parsed.usage == {
        "adult": "black",
        "doh": "black",
        "malware": "black",
        "sexual_education": "white",
    }


def test_a_tree_with_a_malformed_line(tmp_path) -> None:
    root = copy_tree(tmp_path, ["sexual_education"])
    domains = root / "sexual_education" / "domains"
    domains.chmod(0o644)
    lines = domains.read_text().splitlines()
    lines.insert(4, "bad..entry.example")
    domains.write_text("\n".join(lines) + "\n")
    parsed = parse_list(str(root), "ut1")
    [problem] = parsed.problems
    assert (problem.line, problem.reason, problem.text) == (5, "empty label", "bad..entry.example")
    assert problem.source == str(domains)
    assert sum(e.kind is Kind.DOMAIN for e in parsed.entries) == len(lines) - 1


def build_archive(path, categories: list[str], gzip_domains: bool = False) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for category in categories:
            for name in ("domains", "urls", "expressions", "usage"):
                source = UT1 / category / name
                if not source.exists():
                    continue
                data = source.read_bytes()
                member = f"blacklists/{category}/{name}"
                if gzip_domains and name == "domains":
                    data, member = gzip.compress(data), member + ".gz"
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        alias = tarfile.TarInfo("blacklists/porn")
        alias.type = tarfile.SYMTYPE
        alias.linkname = "adult"
        tar.addfile(alias)


def test_an_archive_reads_like_the_folder(tmp_path) -> None:
    archive = tmp_path / "blacklists.tar.gz"
    build_archive(archive, ["doh", "sexual_education", "malware"])
    parsed = parse_list(str(archive), "auto")
    assert parsed.format == "ut1"
    folder = parse_list(str(copy_tree(tmp_path, ["doh", "sexual_education", "malware"])), "ut1")
    strip = [(e.kind, e.value, e.line, e.category) for e in parsed.entries]
    assert strip == [(e.kind, e.value, e.line, e.category) for e in folder.entries]
    assert parsed.usage == folder.usage
    sources = {entry.source for entry in parsed.entries}
    assert f"{archive}!blacklists/doh/domains" in sources
    assert f"{archive}!blacklists/malware/expressions" in sources
    assert not list(tmp_path.glob("**/blacklists/doh/domains.*"))  # nothing extracted


def test_gzipped_members_and_tgz_suffix(tmp_path) -> None:
    archive = tmp_path / "lists.tgz"
    build_archive(archive, ["doh"], gzip_domains=True)
    parsed = parse_list(str(archive))
    domains = [e for e in parsed.entries if e.kind in (Kind.DOMAIN, Kind.IP)]
    assert len(domains) == count_nonblank("doh", "domains")
    assert domains[0].source == f"{archive}!blacklists/doh/domains.gz"


def test_a_single_gzip_file(tmp_path) -> None:
    path = write(tmp_path / "doh", "domains.gz", gzip.compress((UT1 / "doh/domains").read_bytes()))
    as_ut1 = parse_list(str(path), "ut1")
    assert len(as_ut1.entries) == count_nonblank("doh", "domains")
    assert {entry.category for entry in as_ut1.entries} == {"doh"}
    sniffed = parse_list(str(path))
    assert sniffed.format == "domains"
    assert [e.value for e in sniffed.entries] == [e.value for e in as_ut1.entries]


def test_whole_archive_problems_are_errors(tmp_path) -> None:
    corrupt = write(tmp_path, "broken.tar.gz", b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(ListFormatError, match="corrupt archive"):
        parse_list(str(corrupt), "ut1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ListFormatError, match="no UT1 category files"):
        parse_list(str(empty), "ut1")
    binary = tmp_path / "binary.tar.gz"
    with tarfile.open(binary, "w:gz") as tar:
        info = tarfile.TarInfo("bl/x/domains")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"a\x00b\n"))
    with pytest.raises(ListFormatError, match=r"binary\.tar\.gz!bl/x/domains: binary file"):
        parse_list(str(binary), "ut1")
    with pytest.raises(ListFormatError, match="not a UT1 file"):
        parse_list(str(write(tmp_path, "other.txt", "a.example\n")), "ut1")


def test_a_tar_stream_in_a_plain_gz_file_is_sniffed_as_an_archive(tmp_path) -> None:
    archive = tmp_path / "blacklists.gz"  # no .tar in the name, as some mirrors ship it
    build_archive(archive, ["sexual_education"])
    parsed = parse_list(str(archive))
    assert parsed.format == "ut1"
    assert parsed.usage == {"sexual_education": "white"}
    assert {e.category for e in parsed.entries} == {"sexual_education"}


def test_the_opt_in_expression_file_loads_when_named() -> None:
    path = UT1 / "adult" / "very_restrictive_expression"
    parsed = parse_list(str(path), "ut1")
    assert [(e.kind, e.line, e.category) for e in parsed.entries] == [
        (Kind.EXPRESSION, 1, "adult"),
        (Kind.EXPRESSION, 2, "adult"),
    ]

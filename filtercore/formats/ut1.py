"""UT1 / Shallalist category trees: `<category>/{domains,urls,expressions,usage}`.

Accepted inputs:

- a folder holding category folders (searched recursively, so `blacklists/adult/domains`
  and Shallalist's nested `sex/lingerie/domains` both work), or one category folder;
- a tar archive (`.tar.gz`, `.tgz`, `.tar`) of such a tree, read member by member with
  `tarfile`, never extracted to disk; sources are written `archive.tar.gz!adult/domains`;
- a single category file (`adult/domains`, optionally gzip-compressed as `domains.gz`).

The category of every entry is the name of the folder its file is in. `domains` files are
parsed as plain domain lists, `urls` as URL rules, `expressions` as ERE expressions.
`usage` files say whether a category is meant as a black or white list: the first `black`
or `white` line goes to `ParsedList.usage` (the other lines are alias names).

Not loaded from trees: `very_restrictive_expression`. UT1 ships it as an opt-in (its
`adult` one blocks any name with `teen`, `gay` or `mature` as a word); name the file
itself with format `expressions` to use it. Other files (READMEs, symlinks, `global_usage`)
are ignored.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from filtercore.entries import ParsedList
from filtercore.errors import ListFormatError
from filtercore.formats import domains, expressions, urls
from filtercore.formats._common import (
    TextParser,
    content_lines,
    decode,
    gunzip_if_compressed,
    read_text,
)

_PARSERS: dict[str, TextParser] = {
    "domains": domains.parse_text,
    "urls": urls.parse_text,
    "expressions": expressions.parse_text,
}
USAGE = "usage"
OPT_IN_FILES = frozenset({"very_restrictive_expression"})
_USAGE_WORDS = ("black", "white")


def parse_path(path: str, out: ParsedList) -> None:
    """Parse a UT1 tree, category folder, archive or single category file into `out`.

    Raises:
        ListFormatError: the path is missing or unreadable, an archive is corrupt or a
            member is binary, or a folder/archive holds no UT1 category file at all.
    """
    p = Path(path)
    if p.is_dir():
        found = _parse_folder(p, out)
    elif p.is_file() and is_archive(p):
        found = _parse_archive(p, out)
    elif p.is_file():
        base = _base_name(p.name)
        if base not in _PARSERS and base not in OPT_IN_FILES and base != USAGE:
            raise ListFormatError(
                path, "not a UT1 file (expected domains, urls, expressions or usage)"
            )
        category = p.resolve().parent.name
        _parse_member(base, read_text(p), str(p), category, out, explicit=True)
        found = True
    else:
        raise ListFormatError(path, "no such file or folder")
    if not found:
        raise ListFormatError(path, "no UT1 category files (domains, urls, expressions) found")


def _base_name(name: str) -> str:
    """A UT1 file name without its `.gz` suffix."""
    return name[:-3] if name.endswith(".gz") else name


def is_archive(path: Path) -> bool:
    """True for a tar archive: by suffix, or a `.gz` file that holds a tar stream."""
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return True
    try:
        return name.endswith(".gz") and tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        return False  # not readable as a tar: parsed (and reported) as a plain file


def _parse_member(
    base: str, text: str, source: str, category: str, out: ParsedList, explicit: bool = False
) -> bool:
    """Parse one category file by its base name; return whether it was a UT1 file."""
    if base == USAGE:
        _parse_usage(text, source, category, out)
        return True
    if base in OPT_IN_FILES and explicit:
        expressions.parse_text(text, source, out, category)
        return True
    parser = _PARSERS.get(base)
    if parser is None:
        return False
    parser(text, source, out, category)
    return True


def _parse_usage(text: str, source: str, category: str, out: ParsedList) -> None:
    """Record the first `black`/`white` word of a `usage` file."""
    for _, line in content_lines(text, source, out):
        word = line.lower()
        if word in _USAGE_WORDS:
            out.usage.setdefault(category, word)
            return


def _parse_folder(root: Path, out: ParsedList) -> bool:
    """Walk a tree in sorted order (deterministic line order across machines)."""
    found = False
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_walk_error):
        dirnames.sort()
        category = Path(dirpath).resolve().name
        for filename in sorted(filenames):
            base = _base_name(filename)
            if base not in _PARSERS and base != USAGE:
                continue
            file_path = Path(dirpath) / filename
            if file_path.is_symlink():
                continue  # UT1 aliases (porn -> adult) would load a category twice
            found |= _parse_member(base, read_text(file_path), str(file_path), category, out)
    return found


def _raise_walk_error(error: OSError) -> None:
    raise ListFormatError(str(error.filename), f"cannot read folder: {error.strerror}")


def _parse_archive(archive: Path, out: ParsedList) -> bool:
    """Read the category files of a tar archive without extracting it."""
    found = False
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = sorted(
                (member for member in tar.getmembers() if member.isfile()),
                key=lambda member: member.name,
            )
            for member in members:
                member_path = PurePosixPath(member.name)
                base = _base_name(member_path.name)
                if base not in _PARSERS and base != USAGE:
                    continue
                source = f"{archive}!{member.name}"
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                data = gunzip_if_compressed(handle.read(), source)
                category = member_path.parent.name or archive.name.split(".", 1)[0]
                found |= _parse_member(base, decode(data, source), source, category, out)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ListFormatError(str(archive), f"corrupt archive: {exc}") from None
    except OSError as exc:
        raise ListFormatError(str(archive), f"cannot read archive: {exc}") from None
    return found

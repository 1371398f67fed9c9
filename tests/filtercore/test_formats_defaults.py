"""The bundled default lists (lists/default): every list loads, is small, and is described."""

from __future__ import annotations

import tomllib

import pytest

from filtercore.categories import CategoryMap
from filtercore.formats import FORMATS, parse_list, sniff_format
from tests.filtercore.formats_support import ROOT

DEFAULT = ROOT / "lists" / "default"
LISTS = tomllib.loads((DEFAULT / "lists.toml").read_text(encoding="utf-8"))["lists"]
SPEC_KEYS = {"name", "path", "format", "category", "action"}


def test_the_default_set_is_small() -> None:
    size = sum(path.stat().st_size for path in DEFAULT.rglob("*") if path.is_file())
    assert size < 1_500_000


def test_the_readme_states_source_and_licence() -> None:
    readme = (DEFAULT / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in readme and "UT1" in readme


@pytest.mark.parametrize("spec", LISTS, ids=[spec["name"] for spec in LISTS])
def test_each_default_list_loads_cleanly(spec: dict[str, str]) -> None:
    assert set(spec) == SPEC_KEYS
    cmap = CategoryMap.load()
    assert spec["format"] in FORMATS
    assert spec["category"] in cmap.names
    assert spec["action"] == ("allow" if cmap.is_white(spec["category"]) else "block")
    path = DEFAULT / spec["path"]
    assert sniff_format(str(path)) == spec["format"]
    parsed = parse_list(str(path), spec["format"])
    assert parsed.entries and parsed.problems == []
    # The list's UT1 folder maps to the category lists.toml states.
    assert cmap.canonical(path.parent.name) == spec["category"]


def test_names_are_unique_and_every_file_is_listed() -> None:
    names = [spec["name"] for spec in LISTS]
    assert len(names) == len(set(names))
    listed = {spec["path"] for spec in LISTS}
    files = {
        str(path.relative_to(DEFAULT))
        for path in DEFAULT.rglob("*")
        if path.is_file() and path.name in ("domains", "urls")
    }
    assert files == listed


def test_the_ut1_folder_loads_as_one_tree() -> None:
    parsed = parse_list(str(DEFAULT / "ut1"))
    assert parsed.format == "ut1" and parsed.problems == []
    assert parsed.usage["sexual_education"] == "white"
    assert parsed.usage["child"] == "white"
    assert parsed.usage["doh"] == "black"

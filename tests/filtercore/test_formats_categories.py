"""The category map (lists/categories.toml, filtercore.categories)."""

from __future__ import annotations

import pytest

from filtercore.categories import CategoryMap, source_key
from filtercore.errors import FilterError
from tests.filtercore.formats_support import ROOT, UT1, write

CANONICAL = (
    "adult",
    "gambling",
    "violence-hate",
    "drugs",
    "self-harm",
    "dating",
    "games",
    "social",
    "chat",
    "filter-bypass",
    "malware-phishing",
    "education",
)


@pytest.fixture(scope="module")
def cmap() -> CategoryMap:
    return CategoryMap.load()


def test_canonical_names_in_bit_order(cmap: CategoryMap) -> None:
    assert cmap.names == CANONICAL
    assert [cmap.bit(name) for name in CANONICAL] == list(range(len(CANONICAL)))
    with pytest.raises(KeyError, match="not a canonical category: 'porn'"):
        cmap.bit("porn")


def test_only_education_is_white(cmap: CategoryMap) -> None:
    assert [name for name in cmap.names if cmap.is_white(name)] == ["education"]
    assert cmap.is_white("not-a-category") is False
    assert all(cmap.describe(name) for name in cmap.names)


@pytest.mark.parametrize(
    ("source", "canonical"),
    [
        ("adult", "adult"),
        ("porn", "adult"),
        ("mixed_adult", "adult"),
        ("agressif", "violence-hate"),
        ("drogue", "drugs"),
        ("doh", "filter-bypass"),
        ("vpn", "filter-bypass"),
        ("redirector", "filter-bypass"),
        ("social_networks", "social"),
        ("phishing", "malware-phishing"),
        ("sexual education", "education"),
        ("education sexuelle", "education"),
        ("Sexual-Education", "education"),
        ("liste_blanche", "education"),
        ("gamble", "gambling"),
        ("nsfw", "adult"),
        ("violence-hate", "violence-hate"),
        ("VIOLENCE_HATE", "violence-hate"),
        ("sect", None),
        ("shortener", None),
        ("no-such-category", None),
    ],
)
def test_source_names(cmap: CategoryMap, source: str, canonical: str | None) -> None:
    assert cmap.canonical(source) == canonical


def test_every_real_ut1_folder_and_usage_alias_is_decided(cmap: CategoryMap) -> None:
    folders = sorted(path.name for path in UT1.iterdir() if path.is_dir())
    assert len(folders) >= 25
    aliases = set()
    for folder in folders:
        usage = (UT1 / folder / "usage").read_text(encoding="utf-8").splitlines()
        aliases |= {line.strip() for line in usage if line.strip() and line[0] != "#"}
    aliases -= {"black", "white"}
    for name in [*folders, *sorted(aliases)]:
        decided = cmap.canonical(name) is not None or source_key(name) in cmap.unmapped
        assert decided, f"UT1 category {name!r} is neither mapped nor listed as unmapped"


def test_the_bundled_file_is_found_from_the_source_tree() -> None:
    assert CategoryMap.load(ROOT / "lists" / "categories.toml").names == CANONICAL


def test_unknown_keys_name_the_key_and_the_file(tmp_path) -> None:
    path = write(tmp_path, "cats.toml", '[[category]]\nname = "a"\ncolour = "red"\n')
    with pytest.raises(FilterError, match=r"cats\.toml: unknown key 'colour' in \[\[category\]\]"):
        CategoryMap.load(path)
    path = write(tmp_path, "top.toml", '[[category]]\nname = "a"\n[aliases]\nx = "a"\n')
    with pytest.raises(FilterError, match=r"top\.toml: unknown key 'aliases' in the top level"):
        CategoryMap.load(path)


def test_a_source_mapped_twice_is_an_error(tmp_path) -> None:
    text = '[[category]]\nname = "a"\nsources = ["x"]\n[[category]]\nname = "b"\nsources = ["X"]\n'
    with pytest.raises(FilterError, match="source 'X' mapped to both 'a' and 'b'"):
        CategoryMap.load(write(tmp_path, "c.toml", text))


def test_bad_files_are_errors(tmp_path) -> None:
    with pytest.raises(FilterError, match="invalid TOML"):
        CategoryMap.load(write(tmp_path, "bad.toml", "[[category]\n"))
    with pytest.raises(FilterError, match="cannot read category map"):
        CategoryMap.load(tmp_path / "missing.toml")
    with pytest.raises(FilterError, match="white must be true or false"):
        CategoryMap.load(write(tmp_path, "w.toml", '[[category]]\nname = "a"\nwhite = "yes"\n'))
    with pytest.raises(FilterError, match="both mapped and in"):
        CategoryMap.load(
            write(tmp_path, "u.toml", '[[category]]\nname = "a"\n[unmapped]\nnames = ["A"]\n')
        )

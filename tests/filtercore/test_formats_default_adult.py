"""The bundled adult set, lists/default/adult/domains: its shape, where its UT1 part comes
from, and that no white list contradicts it.

An entry is contradicted when it equals a white name, covers it (is a suffix on label
boundaries, as `example.com` covers `a.example.com`) or lies under it. The white names are
the bundled allow lists and, when the UT1 snapshot is beside the project (CI has it), every
UT1 category whose `usage` file says `white` at all: liste_blanche, sexual_education, child,
and chat (which UT1 marks usable either way), from their domains and the hosts of their URL
rules. The real Matcher decides coverage, so the check holds exactly as serving does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from filtercore import Action, ListSpec, Matcher
from filtercore.entries import Entry, Kind, Scope
from filtercore.formats import parse_list
from filtercore.urlrules import split_squidguard_url
from tests.filtercore.formats_support import ROOT, UT1

DEFAULT = ROOT / "lists" / "default"
ADULT = DEFAULT / "adult" / "domains"
ADULT_TLDS = {"xxx", "porn", "adult", "sex"}
# The comments that open the file's two sections taken from UT1: its adult names among the
# most visited sites, then (the last section) the hosts of its adult/urls rules.
UT1_TOP_SECTION = "# From UT1 adult, the most visited"
UT1_SECTION = "# From UT1 adult/urls"


def adult_entries() -> list[Entry]:
    parsed = parse_list(str(ADULT), "domains")
    assert parsed.problems == []
    return parsed.entries


def section_line(comment: str) -> int:
    lines = ADULT.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(comment))


def ut1_section_line() -> int:
    return section_line(UT1_SECTION)


def white_files() -> list[tuple[Path, str]]:
    """(file, format) of each white list: the bundled allow lists, then UT1's white categories."""
    specs = tomllib.loads((DEFAULT / "lists.toml").read_text(encoding="utf-8"))["lists"]
    files = [
        (DEFAULT / spec["path"], spec["format"]) for spec in specs if spec["action"] == "allow"
    ]
    if UT1.is_dir():
        for usage in sorted(UT1.glob("*/usage")):
            if "white" in usage.read_text(encoding="utf-8").split():
                # UT1 names its files after their format.
                files += [
                    (usage.parent / f, f)
                    for f in ("domains", "urls")
                    if (usage.parent / f).is_file()
                ]
    return files


def white_names() -> dict[str, str]:
    """Every white host name -> the first file that lists it."""
    names: dict[str, str] = {}
    for path, fmt in white_files():
        for entry in parse_list(str(path), fmt).entries:
            host = (
                split_squidguard_url(entry.value, strip_label=False)[0]
                if fmt == "urls"
                else entry.value
            )
            names.setdefault(host, str(path.relative_to(path.parent.parent)))
    return names


def test_the_set_is_clean_unique_and_holds_the_adult_tlds() -> None:
    entries = adult_entries()
    names = [entry.value for entry in entries]
    assert 1_000 <= len(names) <= 5_000  # a bundle, not the 4.6 million names of UT1 adult
    assert len(set(names)) == len(names)
    assert all(entry.kind is Kind.DOMAIN and entry.scope is Scope.SUBTREE for entry in entries)
    assert set(names) >= ADULT_TLDS
    # No entry lies under another (such as a name under .xxx): each line blocks something.
    listed = set(names)
    redundant = [
        name
        for name in names
        if any(".".join(name.split(".")[i:]) in listed for i in range(1, name.count(".") + 1))
    ]
    assert redundant == []


def test_a_single_label_line_covers_its_whole_tld() -> None:
    adult = Matcher.from_lists([ListSpec(str(ADULT), format="domains", category="adult")])
    for name, tld in (
        ("anything.xxx", "xxx"),
        ("a.b.porn", "porn"),
        ("x.adult", "adult"),
        ("y.sex", "sex"),
    ):
        verdict = adult.check(name)
        assert verdict.blocked and verdict.rule == tld, (name, verdict)
    # Label boundaries: a name merely ending in the letters is not under the TLD.
    assert not adult.check("example.notxxx").blocked


def test_no_white_name_contradicts_the_set(tmp_path: Path) -> None:
    white = white_names()
    sources = {where.split("/")[0] for where in white.values()}
    assert {"sexual_education", "child"} <= sources
    if UT1.is_dir():
        assert {"liste_blanche", "chat"} <= sources
    adult = Matcher.from_lists([ListSpec(str(ADULT), format="domains", category="adult")])
    covered = {}
    for name, where in white.items():
        verdict = adult.check(name)
        if verdict.blocked:
            covered[name] = (where, verdict.rule)
    listed = tmp_path / "white"
    listed.write_text("\n".join(white) + "\n", encoding="utf-8")
    allow = Matcher.from_lists([ListSpec(str(listed), format="domains", action=Action.ALLOW)])
    under = {}
    for entry in adult_entries():
        verdict = allow.check(entry.value)
        if verdict.action is Action.ALLOW:
            under[entry.value] = verdict.rule
    assert covered == {} and under == {}


def test_the_ut1_section_is_exactly_the_names_taken_from_ut1_adult_urls() -> None:
    rules = parse_list(str(DEFAULT / "ut1" / "adult" / "urls"), "urls").entries
    hosts = {split_squidguard_url(rule.value)[0] for rule in rules}

    def from_ut1(name: str) -> bool:
        return any(host == name or host.endswith("." + name) for host in hosts)

    start = ut1_section_line()
    ut1_part = [entry.value for entry in adult_entries() if entry.line > start]
    ours = [entry.value for entry in adult_entries() if entry.line < start]
    assert ut1_part and [name for name in ut1_part if not from_ut1(name)] == []
    assert [name for name in ours if from_ut1(name)] == []


def test_the_readme_states_the_counts() -> None:
    top, urls = section_line(UT1_TOP_SECTION), ut1_section_line()
    assert top < urls
    entries = adult_entries()
    from_top = sum(top < entry.line < urls for entry in entries)
    from_urls = sum(entry.line > urls for entry in entries)
    readme = (DEFAULT / "README.md").read_text(encoding="utf-8")
    ours = len(entries) - from_top - from_urls - len(ADULT_TLDS)
    assert f"{len(entries):,} entries" in readme
    assert f"{ours:,} names we chose" in readme
    assert f"{from_top:,} names from UT1's adult category" in readme
    assert f"{from_urls:,} names from UT1's adult/urls" in readme

"""`filterdns check` with no options (the embedded default lists, offline as CI is) blocks the
bundled adult set and the adult TLDs, and keeps the bundled white lists reachable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.filterdns.test_cli import run

DEFAULT = Path(__file__).resolve().parents[2] / "lists" / "default"
ADULT = DEFAULT / "adult" / "domains"
# Samples from each kind of entry: tube sites, a CDN host, a mirror, a cam site, a name
# below a listed one, and names from the part taken from UT1's most visited adult names.
SAMPLES = {
    "pornhub.com": "pornhub.com",
    "xvideos.com": "xvideos.com",
    "www.xnxx.com": "xnxx.com",
    "di.phncdn.com": "phncdn.com",
    "xvv1deos.com": "xvv1deos.com",
    "xhamster.desi": "xhamster.desi",
    "chaturbate.com": "chaturbate.com",
    "letmejerk.com": "letmejerk.com",
    "www.thisvid.com": "thisvid.com",
}


def first_name(path: Path) -> str:
    return next(line for line in path.read_text(encoding="utf-8").split() if "." in line)


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep whatever the default configuration writes out of the user's data folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))


def check_json(*targets: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = run("check", "--json", *targets)
    assert result.stderr == ""
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return result.returncode, {row["input"]: row for row in rows}


def test_the_default_blocks_the_adult_set_and_the_adult_tlds() -> None:
    tlds = {"anything.xxx": "xxx", "a.b.porn": "porn", "www.site.adult": "adult", "x.sex": "sex"}
    status, rows = check_json(*SAMPLES, *tlds)
    assert status == 1
    for target, rule in {**SAMPLES, **tlds}.items():
        row = rows[target]
        assert (row["action"], row["category"], row["list"]) == (
            "block",
            "adult",
            "filterdns-adult",
        )
        assert row["rule"] == rule and Path(row["source"]).parts[-2:] == ("adult", "domains")


def test_the_default_allows_the_bundled_white_examples() -> None:
    sex_ed = first_name(DEFAULT / "ut1" / "sexual_education" / "domains")
    child = first_name(DEFAULT / "ut1" / "child" / "domains")
    status, rows = check_json(sex_ed, child, f"www.{child}")
    assert status == 0
    assert rows[sex_ed]["action"] == "allow" and rows[sex_ed]["list"] == "ut1-sexual-education"
    for target in (child, f"www.{child}"):
        assert rows[target]["action"] == "allow" and rows[target]["list"] == "ut1-child"


def test_check_exits_1_for_the_names_a_new_user_tries() -> None:
    result = run("check", "pornhub.com", "xvideos.com")
    assert result.returncode == 1, result.stderr
    assert [line.split(": ")[1].split(" ")[0] for line in result.stdout.splitlines()] == [
        "block",
        "block",
    ]


def test_an_allow_entry_beats_the_adult_set_at_equal_specificity(tmp_path: Path) -> None:
    # No white list names a site of the set (test_formats_default_adult checks it), so one
    # is made: a sexual-education allow list naming a site the set blocks.
    allow = tmp_path / "allow"
    allow.write_text("xvideos.com\n", encoding="utf-8")
    result = run(
        "check",
        "--json",
        "xvideos.com",
        "www.xvideos.com",
        "pornhub.com",
        "--list",
        f"{ADULT}:adult:domains",
        "--list",
        f"{DEFAULT / 'ut1' / 'sexual_education' / 'domains'}:sexual_education:domains",
        "--list",
        f"{allow}:sexual_education:domains",
    )
    rows = {row["input"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert result.returncode == 1, result.stderr
    for target in ("xvideos.com", "www.xvideos.com"):
        assert (rows[target]["action"], rows[target]["category"]) == ("allow", "education")
        assert rows[target]["rule"] == "xvideos.com"
    assert rows["pornhub.com"]["action"] == "block"

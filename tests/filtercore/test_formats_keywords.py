"""Keyword lists and their boundary modes."""

from __future__ import annotations

from filtercore.entries import Kind
from tests.filtercore.formats_support import parse, reasons


def test_modes_default_and_exceptions(tmp_path) -> None:
    text = "# keywords\nSex\nporn$substring\ncasino$label\nbet$word\n@@Essex\n"
    parsed = parse(tmp_path, "keywords", text, name="keywords")
    got = [(e.line, e.kind, e.value, e.mode) for e in parsed.entries]
    assert got == [
        (2, Kind.KEYWORD, "sex", "word"),
        (3, Kind.KEYWORD, "porn", "substring"),
        (4, Kind.KEYWORD, "casino", "label"),
        (5, Kind.KEYWORD, "bet", "word"),
        (6, Kind.KEYWORD_EXCEPTION, "essex", "word"),
    ]
    assert parsed.problems == []


def test_bad_lines_are_reported(tmp_path) -> None:
    text = "$word\nsex$prefix\nsex$\n@@\n@@essex$word\ntwo words\nok\n"
    parsed = parse(tmp_path, "keywords", text)
    assert [(e.line, e.value) for e in parsed.entries] == [(7, "ok")]
    got = reasons(parsed)
    assert got[0] == (1, "empty keyword")
    assert got[1] == (2, "unknown mode $prefix (expected $substring, $label or $word)")
    assert got[2] == (3, "unknown mode $ (expected $substring, $label or $word)")
    assert got[3] == (4, "empty keyword")
    assert got[4][0] == 5 and got[4][1].startswith("a mode ($word) on an exception")
    assert got[5][0] == 6 and got[5][1].startswith("white space inside a keyword")
    assert len(got) == 6

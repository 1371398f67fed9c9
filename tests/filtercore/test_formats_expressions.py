"""Expression lists: ERE to Python translation, real UT1 expressions."""

from __future__ import annotations

import re

from filtercore.entries import Kind
from filtercore.formats import parse_list
from filtercore.formats.expressions import ere_to_python
from tests.filtercore.formats_support import UT1, parse, reasons, ut1_lines


def test_backslash_in_a_bracket_is_literal_as_in_ere() -> None:
    pattern = re.compile(ere_to_python(r"(^|[-\?+=/_])sex([-\.\?+=/_]|$)"))
    assert pattern.search("free-sex.example")
    assert pattern.search("a.example/?sex=1")
    assert pattern.search("x\\sex")  # ERE: `\` is one of the class's characters
    assert not pattern.search("essex.gov.uk")
    assert not pattern.search("sussex.ac.uk")


def test_posix_classes_brackets_and_word_boundaries() -> None:
    assert ere_to_python("[[:digit:]]+") == "[0-9]+"
    assert re.fullmatch(ere_to_python("[[:alpha:]_]+"), "ab_C")
    assert re.fullmatch(ere_to_python("[]a]+"), "]a]")
    assert re.fullmatch(ere_to_python("[^]a]"), "b")
    assert re.fullmatch(ere_to_python("[a[]+"), "[a")
    assert re.search(ere_to_python(r"\<cat\>"), "a cat here")
    assert not re.search(ere_to_python(r"\<cat\>"), "concatenate")
    assert re.fullmatch(ere_to_python("a)"), "a)")  # unmatched `)` is ordinary in ERE
    assert re.fullmatch(ere_to_python("(a|b)+c"), "abc")


def test_real_ut1_expressions_compile_and_match() -> None:
    parsed = parse_list(str(UT1 / "adult" / "very_restrictive_expression"), "expressions")
    lines = ut1_lines("adult", "very_restrictive_expression")
    assert len(parsed.entries) == len(lines) == 2
    assert parsed.problems == []
    assert all(entry.kind is Kind.EXPRESSION for entry in parsed.entries)
    second = re.compile(parsed.entries[1].value)
    assert parsed.entries[1].line == 2
    assert second.search("free-porn.example")
    assert second.search("bigboobs.example")  # (big)?(boob)s? then `.`
    assert not second.search("essex.gov.uk")
    malware = parse_list(str(UT1 / "malware" / "expressions"), "expressions")
    assert re.search(malware.entries[0].value, "192.0.2.1/search?q=123")
    assert not re.search(malware.entries[0].value, "example.com/search?q=123")


def test_uncompilable_lines_are_reported_with_their_number(tmp_path) -> None:
    text = "good[0-9]+\n*leading-star\n(unclosed\n[unterminated\n[[:nope:]]\nfine$\n"
    parsed = parse(tmp_path, "expressions", text)
    assert [e.line for e in parsed.entries] == [1, 6]
    got = reasons(parsed)
    assert [line for line, _ in got] == [2, 3, 4, 5]
    assert all(reason.startswith("invalid expression: ") for _, reason in got)
    assert "unknown POSIX class [:nope:]" in got[3][1]

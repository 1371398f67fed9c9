"""Plain domain lists: hand-written edge cases and real UT1 `domains` files."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from filtercore.entries import Entry, Kind, Problem, Scope
from filtercore.errors import InvalidNameError
from filtercore.formats import parse_list
from filtercore.normalize import normalize_ip, normalize_name
from tests.filtercore.formats_support import UT1, parse, reasons, ut1_lines, values


def test_names_are_normalised_and_keep_their_line_numbers(tmp_path) -> None:
    text = "# header\n\nExample.COM\nsub.example.org.\n  spaced.example  \nbücher.example\n"
    parsed = parse(tmp_path, "domains", text)
    assert values(parsed) == [
        "example.com",
        "sub.example.org",
        "spaced.example",
        "xn--bcher-kva.example",
    ]
    assert [entry.line for entry in parsed.entries] == [3, 4, 5, 6]
    assert parsed.problems == []
    assert parsed.format == "domains"


def test_fast_path_entries_are_ordinary_entries(tmp_path) -> None:
    parsed = parse(tmp_path, "domains", "example.com\n")
    [entry] = parsed.entries
    assert type(entry) is Entry
    assert entry == Entry(Kind.DOMAIN, "example.com", 1, str(tmp_path / "list.txt"))
    assert entry.scope is Scope.SUBTREE
    assert entry.action is None and entry.category is None and entry.nodata is False


def test_wildcards_leading_dots_and_addresses(tmp_path) -> None:
    text = "*.wild.example\n.dot.example\n192.0.2.1\n2001:DB8::1\n[2001:db8::2]\n"
    parsed = parse(tmp_path, "domains", text)
    got = [(entry.kind, entry.value, entry.scope) for entry in parsed.entries]
    assert got == [
        (Kind.DOMAIN, "wild.example", Scope.BELOW),
        (Kind.DOMAIN, "dot.example", Scope.SUBTREE),
        (Kind.IP, "192.0.2.1", Scope.SUBTREE),
        (Kind.IP, "2001:db8::1", Scope.SUBTREE),
        (Kind.IP, "2001:db8::2", Scope.SUBTREE),
    ]


def test_inline_comments_and_crlf(tmp_path) -> None:
    parsed = parse(tmp_path, "domains", "a.example # why\r\nb.example#x\r\n\r\nc.example\r\n")
    assert values(parsed) == ["a.example", "b.example", "c.example"]
    assert [entry.line for entry in parsed.entries] == [1, 2, 4]


def test_malformed_lines_are_reported_with_reason_and_line(tmp_path) -> None:
    long_label = "a" * 64 + ".example"
    long_name = ".".join(["b" * 60] * 5)  # 304 bytes, every label fine
    text = "\n".join(
        [
            "good.example",
            long_label,
            long_name,
            "double..dot.example",
            "bad$char.example",
            "two.example fields.example",
            "xn--zz.example",
            "ok-again.example",
        ]
    )
    parsed = parse(tmp_path, "domains", text)
    assert values(parsed) == ["good.example", "ok-again.example"]
    assert [entry.line for entry in parsed.entries] == [1, 8]
    got = reasons(parsed)
    assert [line for line, _ in got] == [2, 3, 4, 5, 6, 7]
    assert "longer than 63 bytes" in got[0][1]
    assert "longer than 253 bytes" in got[1][1]
    assert got[2][1] == "empty label"
    assert got[3][1] == "character not allowed in a host name"
    assert got[4][1].startswith("more than one field")
    assert "bad A-label" in got[5][1]
    assert parsed.problems[0].text == long_label


def test_a_long_name_with_short_labels_is_fine(tmp_path) -> None:
    name = "a" * 40 + "." + "b" * 40 + ".example"
    assert values(parse(tmp_path, "domains", name + "\n")) == [name]


def test_undecodable_bytes_are_reported_and_the_rest_loads(tmp_path) -> None:
    parsed = parse(tmp_path, "domains", b"a.example\nb\xff\xfe.example\nc.example\n")
    assert values(parsed) == ["a.example", "c.example"]
    assert reasons(parsed) == [(2, "not valid UTF-8 (undecodable bytes)")]


def test_upper_case_problem_text_is_as_written(tmp_path) -> None:
    parsed = parse(tmp_path, "domains", "Fine.Example\nBAD$NAME.Example\n")
    assert values(parsed) == ["fine.example"]
    assert parsed.problems[0].text == "BAD$NAME.Example"


def test_empty_file_has_no_entries(tmp_path) -> None:
    parsed = parse(tmp_path, "domains", "")
    assert parsed.entries == [] and parsed.problems == []


def test_real_ut1_doh_list_loads_every_line() -> None:
    lines = ut1_lines("doh", "domains")
    parsed = parse_list(str(UT1 / "doh" / "domains"), "domains")
    expected = [line.strip().lower() for line in lines if line.strip()]
    assert values(parsed) == expected
    assert len(parsed.entries) == 3015
    assert parsed.problems == []
    by_line = {entry.line: entry.value for entry in parsed.entries}
    assert by_line[1] == "003.tisyang.com"
    assert by_line[1500] == "dns2.lfac.xyz"
    assert by_line[3015] == "zxcvb.pp.ua"


def test_real_ut1_addresses_become_ip_entries() -> None:
    lines = ut1_lines("agressif", "domains")
    ipv4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
    expected_ips = [n for n, line in enumerate(lines, 1) if ipv4.fullmatch(line)]
    parsed = parse_list(str(UT1 / "agressif" / "domains"), "domains")
    assert [e.line for e in parsed.entries if e.kind is Kind.IP] == expected_ips
    assert len(parsed.entries) == len([line for line in lines if line])


def test_real_ut1_leading_dot_lines_are_accepted() -> None:
    parsed = parse_list(str(UT1 / "dynamic-dns" / "domains"), "domains")
    first = parsed.entries[0]
    assert (first.value, first.line, first.scope) == ("afshin.ir", 1, Scope.SUBTREE)
    assert len(parsed.entries) == len(ut1_lines("dynamic-dns", "domains"))


def test_large_list_keeps_every_line_number(tmp_path) -> None:
    text = "".join(f"host{i}.example{i % 97}.com\n" for i in range(200_000))
    path = tmp_path / "big.txt"
    path.write_text(text)
    parsed = parse_list(str(path), "domains")
    assert len(parsed.entries) == 200_000
    assert parsed.entries[-1].line == 200_000
    assert parsed.entries[-1].value == "host199999.example82.com"


def model_line(raw: str, number: int, source: str) -> Entry | Problem | None:
    """What one line must become, computed the slow, obvious way."""
    line = raw.split("#", 1)[0].strip()
    if not line:
        return None
    if len(line.split()) > 1:
        return Problem(source, number, raw, "more than one field (a hosts file? use format hosts)")
    scope = Scope.SUBTREE
    if line.startswith("*."):
        line, scope = line[2:], Scope.BELOW
    elif line.startswith(".") and not line.startswith(".."):
        line = line[1:]
    address = normalize_ip(line) if scope is Scope.SUBTREE else None
    if address is not None:
        return Entry(Kind.IP, address, number, source)
    try:
        return Entry(Kind.DOMAIN, normalize_name(line), number, source, scope=scope)
    except InvalidNameError as exc:
        return Problem(source, number, raw, exc.reason)


LINE = st.one_of(
    st.text(alphabet="abcXYZ019-_.", min_size=0, max_size=12),
    st.text(alphabet="ab.*# \t-", min_size=0, max_size=8),
    st.sampled_from(["192.0.2.1", "::1", "a" * 64 + ".b", "xn--bcher-kva.ex", "xn--zz.ex"]),
    st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(["a" * 63, "é", "B"]), st.just("ex")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=12))
def test_the_fast_path_agrees_with_normalize_name(tmp_path_factory, lines: list[str]) -> None:
    folder = tmp_path_factory.mktemp("prop")
    parsed = parse(folder, "domains", "\n".join(lines))
    source = str(folder / "list.txt")
    expected = [model_line(raw, n, source) for n, raw in enumerate(lines, 1)]
    assert parsed.entries == [x for x in expected if isinstance(x, Entry)]
    assert parsed.problems == [x for x in expected if isinstance(x, Problem)]

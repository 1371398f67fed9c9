"""Confidential SHA-256 lists."""

from __future__ import annotations

import hashlib

from filtercore.entries import Kind
from tests.filtercore.formats_support import parse, reasons, values


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_domain_digests_upper_case_is_lowered(tmp_path) -> None:
    a, b = digest("a.example"), digest("b.example")
    parsed = parse(tmp_path, "sha256-domains", f"# hotline list\n{a}\n{b.upper()}  # note\n")
    assert values(parsed) == [a, b]
    assert [(e.line, e.kind) for e in parsed.entries] == [
        (2, Kind.SHA256_DOMAIN),
        (3, Kind.SHA256_DOMAIN),
    ]
    assert parsed.problems == []


def test_url_digests_have_their_own_kind(tmp_path) -> None:
    parsed = parse(tmp_path, "sha256-urls", digest("a.example/x") + "\n")
    assert [e.kind for e in parsed.entries] == [Kind.SHA256_URL]


def test_anything_but_a_digest_is_reported(tmp_path) -> None:
    good = digest("c.example")
    text = f"{good[:-1]}\n{good}0\n{'g' * 64}\nplain.example\n{good}\n"
    parsed = parse(tmp_path, "sha256-domains", text)
    assert [e.line for e in parsed.entries] == [5]
    got = reasons(parsed)
    assert got[0] == (1, "not a SHA-256 digest (63 characters, expected 64 hex digits)")
    assert got[1] == (2, "not a SHA-256 digest (65 characters, expected 64 hex digits)")
    assert got[2] == (3, "not a SHA-256 digest (non-hex character)")
    assert got[3][0] == 4
    assert len(got) == 4

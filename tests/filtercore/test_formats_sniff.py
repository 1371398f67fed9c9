"""Format sniffing, dispatch, and whole-file errors."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from filtercore.errors import ListFormatError
from filtercore.formats import FORMATS, parse_list, sniff_format
from tests.filtercore.formats_support import UT1, write

DIGEST = hashlib.sha256(b"a.example").hexdigest()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.txt", "! comment\n||ads.example^\n@@||ok.example^\n", "adblock"),
        ("a.txt", "[Adblock Plus 2.0]\nplain.example\n", "adblock"),
        ("a.txt", "# c\naddress=/a.example/0.0.0.0\nserver=/b.example/\n", "dnsmasq"),
        ("a.txt", "local=/a.example/\n", "dnsmasq"),
        ("a.zone", "$TTL 300\n@ SOA a. b. 1 2 3 4 5\nx CNAME .\n", "rpz"),
        ("a.zone", "; rpz\nbad.example CNAME .\n*.bad.example CNAME .\n", "rpz"),
        ("hosts", "# hosts\n127.0.0.1 localhost\n0.0.0.0 a.example\n", "hosts"),
        ("a.txt", "::1 ip6-localhost\n:: a.example\n", "hosts"),
        ("a.txt", f"# hashes\n{DIGEST}\n{DIGEST.upper()}\n", "sha256-domains"),
        ("url-hashes.txt", f"{DIGEST}\n", "sha256-urls"),
        ("a.txt", "# plain\na.example\n192.0.2.1\n*.b.example\n", "domains"),
        ("a.txt", "", "domains"),
        ("phishing.txt", "a.example/login\nb.example/x?y=1\n", "urls"),
        ("a.txt", "# only comments\n", "domains"),
        ("domains", "0.0.0.0 a.example\n", "domains"),  # the name wins over the content
        ("urls", "a.example/x\n", "urls"),
        ("expressions", "sex\n", "expressions"),
        ("very_restrictive_expression", "x\n", "expressions"),
        ("keywords", "sex$word\n", "keywords"),
        ("keywords.txt", "sex$word\n", "keywords"),
    ],
)
def test_sniffing(tmp_path, name: str, text: str, expected: str) -> None:
    path = write(tmp_path, name, text)
    assert sniff_format(str(path)) == expected
    assert parse_list(str(path)).format == expected


def test_a_hosts_file_with_a_few_plain_lines_is_still_hosts(tmp_path) -> None:
    lines = [f"0.0.0.0 a{i}.example" for i in range(20)] + ["stray.example"]
    assert sniff_format(str(write(tmp_path, "list", "\n".join(lines)))) == "hosts"


def test_sniffing_gzip_files_and_folders(tmp_path) -> None:
    gz = write(tmp_path, "list.gz", gzip.compress(b"||a.example^\n"))
    assert sniff_format(str(gz)) == "adblock"
    assert [e.value for e in parse_list(str(gz)).entries] == ["a.example"]
    assert sniff_format(str(tmp_path)) == "ut1"
    assert sniff_format(str(UT1 / "doh")) == "ut1"
    assert sniff_format(str(UT1 / "doh" / "domains")) == "domains"
    assert sniff_format(str(UT1 / "adult" / "very_restrictive_expression")) == "expressions"


def test_formats_lists_every_format() -> None:
    assert set(FORMATS) == {
        "domains",
        "hosts",
        "adblock",
        "dnsmasq",
        "rpz",
        "ut1",
        "sha256-domains",
        "sha256-urls",
        "keywords",
        "expressions",
        "urls",
    }


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(ListFormatError, match="nope.txt: no such file"):
        sniff_format(missing)
    with pytest.raises(ListFormatError, match="nope.txt: no such file"):
        parse_list(missing, "domains")
    with pytest.raises(ListFormatError, match="nope.txt: no such file"):
        parse_list(missing)


def test_binary_file_is_a_clear_error(tmp_path) -> None:
    path = write(tmp_path, "blob.bin", b"a.example\n\x00\x01\x02")
    with pytest.raises(ListFormatError, match=r"binary file \(NUL byte at offset 10\)"):
        parse_list(str(path))
    with pytest.raises(ListFormatError, match="binary file"):
        parse_list(str(path), "hosts")


def test_utf16_is_refused_as_binary(tmp_path) -> None:
    path = write(tmp_path, "utf16.txt", "a.example\n".encode("utf-16"))
    with pytest.raises(ListFormatError, match="binary file"):
        parse_list(str(path), "domains")


def test_unknown_format_is_a_clear_error(tmp_path) -> None:
    path = write(tmp_path, "a.txt", "a.example\n")
    with pytest.raises(ListFormatError, match="unknown list format 'csv'"):
        parse_list(str(path), "csv")


def test_a_folder_given_a_file_format_is_an_error(tmp_path) -> None:
    with pytest.raises(ListFormatError, match="is a folder"):
        parse_list(str(tmp_path), "domains")


def test_unreadable_file_is_a_clear_error(tmp_path) -> None:
    # A path through a file fails with ENOTDIR whatever the user (tests may run as root).
    path = write(tmp_path, "file.txt", "a.example\n") / "inner"
    with pytest.raises(ListFormatError, match="cannot read: Not a directory"):
        parse_list(str(path), "domains")


def test_a_byte_order_mark_is_dropped(tmp_path) -> None:
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbfa.example\n")
    assert [e.value for e in parse_list(str(path)).entries] == ["a.example"]


def test_truncated_gzip_is_a_clear_error(tmp_path) -> None:
    data = gzip.compress(b"a.example\n" * 1000)[:40]
    path = write(tmp_path, "list.gz", data)
    with pytest.raises(ListFormatError, match="corrupt gzip data"):
        parse_list(str(path))
    with pytest.raises(ListFormatError, match="corrupt gzip data"):
        parse_list(str(path), "domains")

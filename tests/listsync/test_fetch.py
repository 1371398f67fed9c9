"""Download helpers: the gzip integrity check and the source naming and duration rules."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from fdconfig.fields import parse_duration
from fdconfig.lists import default_source_name, url_file_name
from listsync.fetch import FetchError, check_gzip


def test_check_gzip_accepts_whole_streams(tmp_path: Path) -> None:
    data = os.urandom(3_000_000)  # incompressible: many chunks in and out
    path = tmp_path / "list.gz"
    path.write_bytes(gzip.compress(data))
    check_gzip(path)
    path.write_bytes(gzip.compress(b"a.example\n") + gzip.compress(b"b.example\n"))
    check_gzip(path)  # two members, as `cat a.gz b.gz` makes
    path.write_bytes(gzip.compress(b"a.example\n") + bytes(1024))
    check_gzip(path)  # zero padding after the end, as tape-era tools leave
    path.write_bytes(b"plain.example\n")
    check_gzip(path)  # not gzip: nothing to check


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda z: z[: len(z) // 2], "truncated"),
        (lambda z: z[:-4], "truncated"),
        (lambda z: z[:20] + bytes(b ^ 0x55 for b in z[20:60]) + z[60:], "corrupt"),
        (lambda z: z + b"garbage!", "corrupt"),
    ],
)
def test_check_gzip_refuses_broken_streams(tmp_path: Path, mangle, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "list.gz"
    path.write_bytes(mangle(gzip.compress(os.urandom(100_000))))
    with pytest.raises(FetchError) as info:
        check_gzip(path)
    assert message in info.value.reason and not info.value.unreachable


def test_source_names_from_urls() -> None:
    url = "https://dsi.example/blacklists/download/blacklists.tar.gz"
    assert url_file_name(url) == "blacklists.tar.gz"
    assert default_source_name(url) == "blacklists"
    assert url_file_name("http://h.example/") == "list"
    assert url_file_name("http://h.example/a%20b/x y.txt?q=1") == "x_y.txt"
    assert url_file_name("http://h.example/..") == "list"
    with pytest.raises(ValueError):
        url_file_name("file:///etc/passwd")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("30m", 1800.0), ("6h", 21600.0), ("1d", 86400.0)],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "soon", "-1h", "0", 0, True, "1y"])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)  # type: ignore[arg-type]

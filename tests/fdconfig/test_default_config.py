"""The embedded default's data directory and its lists given by URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdconfig import (
    UT1_DOWNLOADS,
    ConfigError,
    default_config,
    default_data_dir,
    load_config,
)
from fdconfig.lists import body_path

DEFAULT_SOURCES = ["ut1-adult", "ut1-redirector", "ut1-phishing", "ut1-malware"]


def test_data_dir_systemd_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "filterdns"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")  # as the XDG spec says
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "filterdns"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "filterdns"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/filterdns:/var/lib/other")
    assert default_data_dir() == Path("/var/lib/filterdns")


def test_default_has_the_ut1_categories_by_url_kept_in_the_data_dir(tmp_path: Path) -> None:
    config = default_config(resolv_conf="/nonexistent", data_dir=tmp_path / "state")
    assert config.server.data_dir == str(tmp_path / "state") and not config.server.offline
    by_url = [lc for lc in config.lists if lc.url]
    assert [lc.name for lc in by_url] == DEFAULT_SOURCES
    adult = by_url[0]
    assert adult.url == f"{UT1_DOWNLOADS}adult.tar.gz"
    assert adult.path == str(body_path(tmp_path / "state", "ut1-adult", adult.url))
    assert adult.category is None  # the UT1 folder name maps through categories.toml
    assert adult.refresh == 86_400.0
    assert any(not lc.url and lc.name == "ut1-gambling" for lc in config.lists)
    offline = default_config(resolv_conf="/nonexistent", data_dir=tmp_path, offline=True)
    assert offline.server.offline and [lc.name for lc in offline.lists if lc.url] == (
        DEFAULT_SOURCES
    )


def test_ut1_base_url_for_tests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FILTERDNS_UT1_BASE_URL", "http://127.0.0.1:8999/ut1/")
    config = default_config(resolv_conf="/nonexistent", data_dir=tmp_path)
    assert [lc.url for lc in config.lists if lc.url] == [
        f"http://127.0.0.1:8999/ut1/{name.removeprefix('ut1-')}.tar.gz"
        for name in DEFAULT_SOURCES
    ]


def test_offline_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\noffline = true\n")
    assert load_config(path, resolv_conf="/nonexistent").server.offline
    path.write_text('[server]\noffline = "yes"\n')
    with pytest.raises(ConfigError, match="server.offline"):
        load_config(path, resolv_conf="/nonexistent")

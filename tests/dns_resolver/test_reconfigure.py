"""What a config reload keeps and applies (`dns_resolver.reconfigure`), on real files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from dns_resolver.reconfigure import (
    ConfigSource,
    Reread,
    keep_running,
    reread,
    restart_needed,
)
from fdconfig import Address, Config, load_config
from tests.dns_resolver.harness import to_toml

BASE: dict[str, Any] = {
    "server": {"listen": ["127.0.0.1:5300"], "workers": 1},
    "upstream": {"servers": ["127.0.0.1:5301"]},
    "metrics": {"listen": "127.0.0.1:9300"},
}


def _write(tmp_path: Path, **sections: Any) -> Path:
    """BASE with `sections` merged into (or added to) it, written as the config file
    (an array of tables, like `forward`, is set as given)."""
    data: dict[str, Any] = {name: dict(table) for name, table in BASE.items()}
    for name, table in sections.items():
        if isinstance(table, list):
            data[name] = table
        else:
            data.setdefault(name, {}).update(table)
    path = tmp_path / "filterdns.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def _load(tmp_path: Path, **sections: Any) -> Config:
    return load_config(_write(tmp_path, **sections))


def test_the_same_file_needs_no_restart(tmp_path: Path) -> None:
    running = _load(tmp_path)
    assert restart_needed(running, _load(tmp_path)) == []


@pytest.mark.parametrize(
    ("changed", "keys"),
    [
        ({"server": {"listen": ["127.0.0.1:5400"]}}, ["server.listen"]),
        ({"server": {"workers": 2}}, ["server.workers"]),
        (
            {"server": {"listen": ["127.0.0.1:5400"], "workers": 2, "data_dir": "state"}},
            # The console's store folder is relative to the data directory.
            ["server.listen", "server.workers", "server.data_dir", "console.store_dir"],
        ),
        ({"server": {"fast_path": False}}, ["server.fast_path"]),
        ({"server": {"udp_payload_size": 1400}}, ["server.udp_payload_size"]),
        ({"metrics": {"listen": ""}}, ["metrics.listen"]),
        (
            {"admin": {"enabled": True, "listen": "127.0.0.1:8200"}},
            # The block page's report form and link follow the admin listener.
            ["admin.enabled", "admin.listen", "reports.form_url", "reports.page_url"],
        ),
        ({"blockpage": {"enabled": True}}, ["blockpage.enabled"]),
        ({"reports": {"burst": 3}}, ["reports.burst"]),
        ({"ratelimit": {"enabled": True, "qps": 5.0}}, ["ratelimit.enabled", "ratelimit.qps"]),
        ({"dnstap": {"socket": "tap.sock"}}, ["dnstap.socket"]),
        ({"observed": {"enabled": True}, "leads": {"min_clients": 5}},
         ["observed.enabled", "leads.min_clients"]),
        (
            {
                "server": {
                    "listen_tls": ["127.0.0.1:5853"],
                    "listen_https": ["127.0.0.1:5443"],
                    "listen_quic": ["127.0.0.1:5853"],
                    "trusted_proxies": ["10.0.0.0/8"],
                    "proxy_required": True,
                }
            },
            [
                "server.listen_tls", "server.listen_https", "server.listen_quic",
                "server.trusted_proxies", "server.proxy_required",
            ],
        ),
    ],
)
def test_keys_bound_to_start_up_are_named(
    tmp_path: Path, changed: dict[str, Any], keys: list[str]
) -> None:
    running = _load(tmp_path)
    assert restart_needed(running, _load(tmp_path, **changed)) == keys


def test_what_applies_live_is_not_named(tmp_path: Path) -> None:
    running = _load(tmp_path)
    new = _load(
        tmp_path,
        upstream={"servers": ["127.0.0.1:5302"], "strategy": "parallel", "timeout": 1.0},
        access={"deny": ["127.0.0.2/32"]},
        cache={"max_entries": 10, "prefetch": True},
        blocking={"mode": "null"},
        logging={"level": "debug"},
        querylog={"enabled": True},
        policies={"default": {"block": ["adult"]}},
        forward=[{"domains": ["corp.test"], "servers": ["127.0.0.1:5303"]}],
        local={"records": ["printer.lan 300 IN A 192.168.1.9"], "nodefault": ["test"]},
        server={"offline": True, "tcp_idle_timeout": 3.0},
        # The encrypted listeners read [tls] for each new connection.
        tls={"server_name": "dns.example.org", "max_streams": 5, "ticket_rotation": "1h"},
    )
    assert new != running
    assert restart_needed(running, new) == []


def test_keep_running_takes_the_restart_only_keys_from_the_running_config(
    tmp_path: Path,
) -> None:
    running = _load(tmp_path)
    new = _load(
        tmp_path,
        server={"listen": ["127.0.0.1:5400"], "workers": 3},
        access={"deny": ["127.0.0.2/32"]},
    )
    kept = keep_running(running, new)
    assert kept.server.listen == (Address("127.0.0.1", 5300),)
    assert kept.server.workers == 1
    assert [str(n) for n in kept.access.deny] == ["127.0.0.2/32"]  # applies
    assert restart_needed(running, kept) == []


def test_reread_logs_the_restart_keys_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = _load(tmp_path)
    path = _write(
        tmp_path,
        server={"listen": ["127.0.0.1:5400"]},
        metrics={"listen": "127.0.0.1:9400"},
        access={"deny": ["127.0.0.2/32"]},
    )
    with caplog.at_level(logging.INFO, logger="dns_resolver.reconfigure"):
        outcome = reread(ConfigSource(str(path)).load, running)
    assert outcome.result == "applied"
    assert outcome.restart_needed == ("server.listen", "metrics.listen")
    assert outcome.config is not None
    assert outcome.config.server.listen == running.server.listen
    assert outcome.config.metrics.listen == running.metrics.listen
    assert [str(n) for n in outcome.config.access.deny] == ["127.0.0.2/32"]
    assert [r.getMessage() for r in caplog.records] == [
        "config reload: restart needed for server.listen, metrics.listen; kept as they were"
    ]
    assert outcome.as_dict() == {
        "config": "applied",
        "restart_needed": ["server.listen", "metrics.listen"],
    }


def test_a_file_that_does_not_validate_is_rejected_with_file_and_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = _load(tmp_path)
    path = _write(tmp_path, upstream={"strategy": "fast"})
    with caplog.at_level(logging.ERROR, logger="dns_resolver.reconfigure"):
        outcome = reread(ConfigSource(str(path)).load, running)
    error = f'{path}: upstream.strategy: must be "failover" or "parallel", got "fast"'
    assert outcome == Reread(None, error=error)
    assert outcome.result == "rejected"
    assert outcome.as_dict() == {"config": "rejected", "error": error}
    assert [r.getMessage() for r in caplog.records] == [
        f"config reload rejected, keeping the running configuration: {error}"
    ]
    path.unlink()
    assert reread(ConfigSource(str(path)).load, running).error == f"{path}: no such file"


def test_the_command_line_flags_still_win_on_reload(tmp_path: Path) -> None:
    path = _write(tmp_path)
    source = ConfigSource(
        str(path),
        data_dir=str(tmp_path / "state"),
        offline=True,
        upstream=("127.0.0.1:5999",),
        block_mode="nodata",
        log_format="json",
    )
    running = source.load()
    _write(
        tmp_path,
        server={"data_dir": "elsewhere", "offline": False},
        upstream={"servers": ["127.0.0.1:5302"]},
        blocking={"mode": "null"},
    )
    outcome = reread(source.load, running)
    new = outcome.config
    assert new is not None
    assert outcome.restart_needed == ()
    assert new.server.data_dir == str(tmp_path / "state")
    assert new.server.offline is True
    assert new.upstream.servers == (Address("127.0.0.1", 5999),)
    assert new.blocking.mode == "nodata"
    assert new.logging.format == "json"


def test_a_query_log_that_cannot_be_opened_is_rejected(tmp_path: Path) -> None:
    running = _load(tmp_path)
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    path = _write(tmp_path, querylog={"enabled": True, "path": "a-file/queries.log"})
    outcome = reread(ConfigSource(str(path)).load, running)
    assert outcome.config is None
    assert outcome.error == (
        f"{path}: querylog.path: {tmp_path / 'a-file' / 'queries.log'}: cannot be opened: "
        "Not a directory"
    )
    # Openable, it applies (and the file is there for the log to append to).
    path = _write(tmp_path, querylog={"enabled": True, "path": "queries.log"})
    assert reread(ConfigSource(str(path)).load, running).config is not None
    assert (tmp_path / "queries.log").is_file()

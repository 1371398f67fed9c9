"""Re-reading the configuration file while serving (SIGHUP, `POST /api/reload`).

The file is read and validated again, with the command-line flags applied on top as at
start-up (`ConfigSource`). A file that does not validate changes nothing: the error (file
and key) is logged and the reload counts as rejected. Otherwise what can change live does
(`app.App.apply_config` and, with workers, each worker), and what cannot
(`RESTART_ONLY_KEYS`, `RESTART_ONLY_SECTIONS`: sockets, processes and listeners opened once
at start-up) is named in one log line and kept as it was (`reread`).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from fdconfig import Config, ConfigError, apply_overrides, require_upstreams
from fdconfig.cli import load_base

log = logging.getLogger(__name__)

APPLIED = "applied"
REJECTED = "rejected"
RESULTS = (APPLIED, REJECTED)

# Keys bound to what start-up opened once: listening sockets, the worker processes, the
# snapshot's and the databases' folder, buffers sized for the payload, the HTTP listeners.
# Everything else applies live, [[lists]], [[forward]] and [local] included, and
# server.offline too (the list reloader reads it before each download), and [tls]: the
# encrypted listeners read it for each new connection, and the certificate files are read
# again on every reload (also when only their content changed).
RESTART_ONLY_KEYS: dict[str, tuple[str, ...]] = {
    "server": (
        "listen", "workers", "data_dir", "fast_path", "udp_payload_size",
        "listen_tls", "listen_https", "listen_quic", "trusted_proxies", "proxy_required",
    ),
    "metrics": ("listen",),
}
# Whole sections whose listener (and its database), or whose state shared with the C fast
# path and the metrics (the rate limiter's table, dnstap's writer thread, the observed
# domains' filters and their reviewer, the console's store and statistics), is built once
# at start-up.
RESTART_ONLY_SECTIONS = (
    "admin", "reports", "blockpage", "ratelimit", "dnstap", "observed", "leads", "console",
)


@dataclass(frozen=True)
class ConfigSource:
    """Where the configuration comes from: the file (None: the embedded default) and the
    `serve` flags that override it, so a reload reads exactly what start-up read."""

    path: str | None = None
    data_dir: str | None = None
    offline: bool = False
    listen: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    block_mode: str | None = None
    metrics_listen: str | None = None
    log_format: str | None = None
    listen_tls: tuple[str, ...] = ()
    listen_https: tuple[str, ...] = ()
    listen_quic: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ConfigSource:
        """The source `filterdns serve` was started with."""
        return cls(
            path=args.config,
            # Absolute now: a reload must find the same folder whatever the cwd then.
            data_dir=os.path.abspath(args.data_dir) if args.data_dir else None,
            offline=bool(args.offline),
            listen=tuple(args.listen),
            upstream=tuple(args.upstream),
            lists=tuple(args.lists),
            block_mode=args.block_mode,
            metrics_listen=args.metrics_listen,
            log_format=args.log_format,
            listen_tls=tuple(args.listen_tls),
            listen_https=tuple(args.listen_https),
            listen_quic=tuple(args.listen_quic),
            tls_cert=_absolute(args.tls_cert),
            tls_key=_absolute(args.tls_key),
        )

    def load(self) -> Config:
        """The effective configuration: the file (or the default) with the flags applied.

        Raises:
            ConfigError: naming the file (or "command line") and the key.
            OSError: when the file cannot be read.
        """
        config = load_base(
            argparse.Namespace(config=self.path, data_dir=self.data_dir, offline=self.offline)
        )
        config = apply_overrides(
            config,
            listen=self.listen,
            upstream=self.upstream,
            lists=self.lists,
            block_mode=self.block_mode,
            metrics_listen=self.metrics_listen,
            listen_tls=self.listen_tls,
            listen_https=self.listen_https,
            listen_quic=self.listen_quic,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
        )
        require_upstreams(config)
        if self.log_format:
            config = replace(config, logging=replace(config.logging, format=self.log_format))
        return config


def _absolute(path: str | None) -> str | None:
    # A reload must find the same file whatever the cwd then.
    return os.path.abspath(path) if path else path


@dataclass(frozen=True)
class Reread:
    """The outcome of re-reading the file: the configuration to apply (None: rejected),
    the error text, and the keys that need a restart (kept as they were)."""

    config: Config | None
    error: str = ""
    restart_needed: tuple[str, ...] = ()

    @property
    def result(self) -> str:
        return APPLIED if self.config is not None else REJECTED

    def as_dict(self) -> dict[str, Any]:
        """The admin API's view: result, and the error or the keys needing a restart."""
        out: dict[str, Any] = {"config": self.result}
        if self.error:
            out["error"] = self.error
        if self.restart_needed:
            out["restart_needed"] = list(self.restart_needed)
        return out


def _restart_only(config: Config) -> dict[str, tuple[str, ...]]:
    keys = dict(RESTART_ONLY_KEYS)
    for section in RESTART_ONLY_SECTIONS:
        keys[section] = tuple(f.name for f in fields(getattr(config, section)))
    return keys


def restart_needed(running: Config, new: Config) -> list[str]:
    """The keys (`section.key`) that differ in `new` but only change with a restart."""
    changed = []
    for section, names in _restart_only(running).items():
        old_part, new_part = getattr(running, section), getattr(new, section)
        changed += [
            f"{section}.{name}"
            for name in names
            if getattr(old_part, name) != getattr(new_part, name)
        ]
    return changed


def keep_running(running: Config, new: Config) -> Config:
    """`new` with every restart-only key as it is in `running`."""
    parts: dict[str, Any] = {}
    for section, names in _restart_only(running).items():
        old_part = getattr(running, section)
        parts[section] = replace(
            getattr(new, section), **{name: getattr(old_part, name) for name in names}
        )
    # The allowance minutes live in the data directory that is kept.
    parts["policy"] = replace(new.policy, state_dir=running.policy.state_dir)
    return replace(new, **parts)


def _check_files(config: Config) -> None:
    """Open what the new configuration writes to, as applying it will: with workers the
    parent validates for every worker, so a file that cannot be opened is found here."""
    if not config.querylog.enabled:
        return
    path = config.querylog.path
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigError(
            config.source or "<default>", "querylog.path",
            f"{path}: cannot be opened: {exc.strerror or exc}",
        ) from None


def reread(load: Callable[[], Config], running: Config) -> Reread:
    """Load the configuration again and decide what of it applies now (logged here)."""
    try:
        new = load()
        if new.querylog != running.querylog:
            _check_files(new)
    except (ConfigError, OSError) as exc:
        log.error("config reload rejected, keeping the running configuration: %s", exc)
        return Reread(None, error=str(exc))
    restart = restart_needed(running, new)
    if restart:
        log.warning(
            "config reload: restart needed for %s; kept as they were", ", ".join(restart)
        )
        new = keep_running(running, new)
    return Reread(new, restart_needed=tuple(restart))


def apply_logging(config: Config) -> None:
    """Set the diagnostic log's level and format as `config` says."""
    from dns_resolver.cli import setup_logging

    setup_logging(config.logging.level, config.logging.format)


__all__ = [
    "APPLIED",
    "REJECTED",
    "RESULTS",
    "ConfigSource",
    "Reread",
    "apply_logging",
    "keep_running",
    "reread",
    "restart_needed",
]

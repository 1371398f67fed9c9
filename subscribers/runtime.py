"""Subscribers inside `filterdns serve`: the store, the table's writer and reader, and the
policy the resolver would give an address without a subscriber."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from listsync.audit import AuditLog
from listsync.sources import AUDIT_NAME
from subscribers.service import SubscriberService, SubscriberView, table_path
from subscribers.store import SubscriberStore, database_url

AUDIT_KIND = "subscriber"
"""The audit records of subscriber changes (API, CLI and RADIUS) in `<data_dir>/audit.jsonl`."""


def serving_view(config: Any, data_dir: str | os.PathLike[str]) -> SubscriberView:
    """What a worker of several consults: the table the supervisor writes, mapped."""
    store = SubscriberStore(database_url(config, data_dir), run_migrations=False)
    return SubscriberView(table_path(config, data_dir), store)


class _PolicyNames:
    """The configured policies as the provisioning API needs them: names in index order
    and the policy an address gets by network alone."""

    policy_names: list[str]

    def _configure(self, config: Any) -> None:
        if not config.policy.enabled:
            raise ValueError("[subscribers] needs [policies]: a subscriber's policy is one")
        self.config = config
        # The PolicyTable's index order (dns_resolver.steps.policy): the table stores indexes.
        self.policy_names = [p.name for p in config.policy.policies]
        self.networks = [
            (net, i) for i, p in enumerate(config.policy.policies) for net in p.clients
        ]
        self.networks.sort(key=lambda item: -item[0].prefixlen)

    def network_policy(self, address: str) -> tuple[str, str]:
        """(policy, "address" or "default") of `address` by the policy networks alone."""
        ip = ipaddress.ip_address(address.strip())
        for net, index in self.networks:
            if ip.version == net.version and ip in net:
                return self.policy_names[index], "address"
        return "default", "default"


class Subscribers(_PolicyNames):
    """Everything `[subscribers]` runs in the process that writes the table: the process
    that serves (one worker), or the supervisor of several workers.

    Args:
        config: the loaded config (subscribers need `[policies]`).
        data_dir: where the SQLite database and the table file live.
        policies: the resolver's `PolicyTable` when this process also serves (it then
            consults the table), or None (the supervisor).
    """

    def __init__(self, config: Any, data_dir: str | os.PathLike[str], policies: Any = None) -> None:
        self._configure(config)
        self.policies = policies
        self.audit = AuditLog(Path(data_dir) / AUDIT_NAME)  # RADIUS changes (API: its own)
        self.store = SubscriberStore(database_url(config, data_dir))
        self.service = SubscriberService(
            self.store,
            table_path(config, data_dir),
            self.policy_names,
            config.subscribers.poll_interval,
        )

    def kick(self) -> None:
        """The store changed here: the table's writer reads the log now."""
        self.service.kick()

    def reconfigure(self, config: Any, policies: Any = None) -> None:
        """A reloaded configuration: the table's policy indexes follow the new order
        (`policies`: the new `PolicyTable` when this process serves)."""
        self._configure(config)
        self.service.reindex(self.policy_names)
        if policies is not None:
            self.policies = policies

    def start(self) -> None:
        """Build the table, start tailing the log, and let the resolver consult it."""
        self.service.start()
        if self.policies is not None:
            self.policies.subscribers = SubscriberView(self.service.path, self.store)

    def stop(self) -> None:
        self.service.stop()
        self.store.close()


class SubscriberWrites(_PolicyNames):
    """The provisioning API in the worker that serves the admin listener, while its
    supervisor writes the table (workers.py): changes go to the store as the CLI's do,
    and `kick` wakes the supervisor's writer to read the change log at once.

    Args:
        config: the loaded config.
        data_dir: where the SQLite database lives (migrated by the supervisor).
        wake: tells the table's writer that the log grew (a signal to the supervisor).
    """

    def __init__(
        self, config: Any, data_dir: str | os.PathLike[str], wake: Callable[[], None]
    ) -> None:
        self._configure(config)
        self.store = SubscriberStore(database_url(config, data_dir), run_migrations=False)
        self.kick = wake

    def reconfigure(self, config: Any, policies: Any = None) -> None:
        """A reloaded configuration: the API checks against the new policy names (the
        supervisor renumbers the table)."""
        self._configure(config)

    def stop(self) -> None:
        self.store.close()

"""Subscribers inside `filterdns serve`: the store, the table's writer and reader, and the
policy the resolver would give an address without a subscriber."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from subscribers.service import SubscriberService, SubscriberView, table_path
from subscribers.store import SubscriberStore, database_url


class Subscribers:
    """Everything `[subscribers]` runs in one process.

    Args:
        config: the loaded config.
        policies: the resolver's `PolicyTable` (subscribers need `[policies]`).
        data_dir: where the SQLite database and the table file live.
    """

    def __init__(self, config: Any, policies: Any, data_dir: str | os.PathLike[str]) -> None:
        if policies is None:
            raise ValueError("[subscribers] needs [policies]: a subscriber's policy is one")
        self.config = config
        self.policies = policies
        self.policy_names = [p.name for p in policies.policies]
        self.store = SubscriberStore(database_url(config, data_dir))
        self.service = SubscriberService(
            self.store,
            table_path(config, data_dir),
            self.policy_names,
            config.subscribers.poll_interval,
        )
        self.view: SubscriberView | None = None

    def start(self) -> None:
        """Build the table, start tailing the log, and let the resolver consult it."""
        self.service.start()
        self.view = SubscriberView(self.service.path, self.store)
        self.policies.subscribers = self.view

    def stop(self) -> None:
        self.service.stop()
        self.store.close()

    def network_policy(self, address: str) -> tuple[str, str]:
        """(policy, "address" or "default") of `address` by the policy networks alone."""
        ip = ipaddress.ip_address(address.strip())
        for net, index in self.policies.networks:
            if ip.version == net.version and ip in net:
                return self.policy_names[index], "address"
        return "default", "default"
